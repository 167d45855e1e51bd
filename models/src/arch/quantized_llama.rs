//! Llama from GGUF (`general.architecture = llama`): the quantized forms llama.cpp
//! writes for Llama-family checkpoints, SmolLM2 among them. The fallback for `llama`
//! files that neither quantized-mistral nor quantized-mixtral claims.
//!
//! Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023).
//! Reference implementation: llama.cpp (`src/models/llama.cpp`). Built on zoo's
//! Llama decoder (`llama_decoder/`; see there why not candle's `quantized_llama`).

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions};

/// Llama (GGUF, quantized weights).
#[register_model(
    name = "quantized-llama",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedLlama::load,
    batching = true,
)]
pub struct QuantizedLlama(Decoded<LlamaDecoder>);

llama_gguf_load!(QuantizedLlama, LlamaOptions::LLAMA);
