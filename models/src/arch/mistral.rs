//! Mistral from safetensors (`MistralForCausalLM`).
//!
//! Paper: "Mistral 7B" (Jiang et al., 2023). Reference implementation: transformers' `modeling_mistral.py`. Built on
//! candle-transformers' `mistral`.
//!
//! candle's Mistral applies the sliding window only inside one forward call, with one
//! key too many (`i - j <= w` where transformers has `i - j < w`), and not at all over
//! the KV cache. Passing `w - 1` fixes the first; a sequence longer than the window
//! is refused with an error instead of computed wrongly (Mistral 7B v0.1, window 4096;
//! later versions have no window).

use candle_transformers::models::mistral as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, window_one_key_narrower, CandleLm, ConfigQuirks};

/// Mistral (safetensors, f32 on CPU).
#[register_model(
    name = "mistral",
    format = safetensors,
    hf_architectures = ["MistralForCausalLM"],
    model_types = ["mistral"],
    load = Mistral::load,
)]
pub struct Mistral(CandleLm<candle_model::Model>);

candle_load!(
    Mistral,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' MistralConfig default
        refuse_past_sliding_window: true,
        fix: Some(window_one_key_narrower),
        ..ConfigQuirks::default()
    }
);
