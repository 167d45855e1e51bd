//! Gemma 3 from safetensors (`Gemma3ForCausalLM`, the text models such as 270M and 1B).
//!
//! Paper: "Gemma 3 Technical Report" (Gemma Team, 2025). Reference implementation:
//! transformers' `modeling_gemma3.py`. Built on zoo's Gemma decoder (`gemma_decoder/`,
//! matrices in their stored dtype), not on candle-transformers 0.11.1's `gemma3`, whose
//! sliding-window mask admits one key too many inside a forward call (`i - j <= w`
//! where transformers has `i - j < w`).

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{gemma_safetensors_load, GemmaConfigDefaults, GemmaDecoder};

/// Gemma 3 text (safetensors, weights in their stored dtype).
#[register_model(
    name = "gemma3",
    format = safetensors,
    hf_architectures = ["Gemma3ForCausalLM"],
    model_types = ["gemma3_text"],
    load = Gemma3::load,
    batching = true,
)]
pub struct Gemma3(Decoded<GemmaDecoder>);

// transformers' Gemma3TextConfig defaults: five local layers, then one global; its four
// norms per layer.
gemma_safetensors_load!(Gemma3 {
    rope_theta: 1_000_000.0,
    rope_local_base: Some(10_000.0),
    sliding_window_pattern: 6,
    default_context: None,
    norms: GemmaConfigDefaults::SANDWICH_NORMS,
});
