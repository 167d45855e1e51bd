//! GLM-4 (the 0414 family) from GGUF (`general.architecture = glm4`).
//!
//! Reference implementation: llama.cpp (`src/models/glm4.cpp`) and transformers'
//! `modeling_glm4.py`. Built on zoo's Llama decoder (`llama_decoder/`): q/k/v biases,
//! GPT-J rotary pairs on part of each head (`glm4.rope.dimension_count`, half in the
//! released models), the fused gate/up MLP, and a second RMS norm after both attention
//! and MLP ("sandwich" norms). candle-transformers 0.11.1's `quantized_glm4` expands the
//! token embedding to f32, fixes the rotated part at half of each head and has no cache
//! reset or batched forward. A file whose value width differs from its key width is
//! refused (the cache stores one width).

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions, Norms};

/// GLM-4-0414 (GGUF, quantized weights).
#[register_model(
    name = "quantized-glm4",
    format = gguf,
    gguf_architectures = ["glm4"],
    load = QuantizedGlm4::load,
    batching = true,
)]
pub struct QuantizedGlm4(Decoded<LlamaDecoder>);

/// Biases, sandwich norms, fused gate/up; Glm4Config's rope default is Llama's.
const OPTIONS: LlamaOptions = LlamaOptions {
    qkv_bias: true,
    norms: Norms::Sandwich,
    fused_gate_up: true,
    ..LlamaOptions::LLAMA
};

llama_gguf_load!(QuantizedGlm4, OPTIONS);
