//! Gemma 2 from safetensors (`Gemma2ForCausalLM`).
//!
//! Paper: "Gemma 2: Improving Open Language Models at a Practical Size" (2024).
//! Reference implementation: transformers' `modeling_gemma2.py`. Built on zoo's Gemma
//! decoder (`gemma_decoder/`, as the GGUF form is): local and global layers alternate
//! with the window masked as transformers masks it, attention and final soft-capping,
//! matrices in their stored dtype, the batched forward. candle-transformers' `gemma2`
//! masks no sliding window at all.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{gemma_safetensors_load, GemmaConfigDefaults, GemmaDecoder};

/// Gemma 2 (safetensors, weights in their stored dtype).
#[register_model(
    name = "gemma2",
    format = safetensors,
    hf_architectures = ["Gemma2ForCausalLM"],
    model_types = ["gemma2"],
    load = Gemma2::load,
    batching = true,
)]
pub struct Gemma2(Decoded<GemmaDecoder>);

// transformers' Gemma2Config defaults: local and global layers alternate, one rope
// base for both, context 8192; four norms per layer.
gemma_safetensors_load!(Gemma2 {
    rope_theta: 10_000.0,
    rope_local_base: None,
    sliding_window_pattern: 2,
    default_context: Some(8192),
    norms: GemmaConfigDefaults::SANDWICH_NORMS,
});
