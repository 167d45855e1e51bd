//! Gemma (1) from safetensors (`GemmaForCausalLM`).
//!
//! Paper: "Gemma: Open Models Based on Gemini Research and Technology" (2024).
//! Reference implementation: transformers' `modeling_gemma.py`. Built on zoo's Gemma
//! decoder (`gemma_decoder/`, as the GGUF form is): GELU in its tanh form (transformers'
//! `hidden_activation`), matrices in their stored dtype, the batched forward. candle's
//! `gemma` refuses a config.json with both `hidden_act` and `hidden_activation`, as
//! transformers writes it.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{gemma_safetensors_load, GemmaConfigDefaults, GemmaDecoder};

/// Gemma (safetensors, weights in their stored dtype).
#[register_model(
    name = "gemma",
    format = safetensors,
    hf_architectures = ["GemmaForCausalLM"],
    model_types = ["gemma"],
    load = Gemma::load,
    batching = true,
)]
pub struct Gemma(Decoded<GemmaDecoder>);

// transformers' GemmaConfig defaults: no local layers, context 8192; Llama's two norms
// per layer.
gemma_safetensors_load!(Gemma {
    rope_theta: 10_000.0,
    rope_local_base: None,
    sliding_window_pattern: 1,
    default_context: Some(8192),
    norms: GemmaConfigDefaults::LLAMA_NORMS,
});
