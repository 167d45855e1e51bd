//! Qwen2 / Qwen2.5 from GGUF (`general.architecture = qwen2`), e.g. Qwen2.5-Coder.
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation:
//! llama.cpp (`src/models/qwen2.cpp`): Llama-like with biases on q/k/v and NeoX rotary
//! halves. Built on zoo's Llama decoder (`llama_decoder/`): candle's
//! `quantized_qwen2` expands the 151,936-token embedding to f32 (519 MiB for 0.5B).

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions, RopeLayout};

/// Qwen2 / Qwen2.5 (GGUF, quantized weights).
#[register_model(
    name = "quantized-qwen2",
    format = gguf,
    gguf_architectures = ["qwen2"],
    load = QuantizedQwen2::load,
    batching = true,
)]
pub struct QuantizedQwen2(Decoded<LlamaDecoder>);

/// Biases on q, k and v; NeoX rotary halves (transformers' Qwen2Config rope default is Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    rope: RopeLayout::Halves,
    qkv_bias: true,
    ..LlamaOptions::LLAMA
};

llama_gguf_load!(QuantizedQwen2, OPTIONS);
