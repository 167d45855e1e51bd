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
use serde_json::{json, Value};
use zoo_core::{Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Mistral (safetensors, f32 on CPU).
#[register_model(
    name = "mistral",
    format = safetensors,
    hf_architectures = ["MistralForCausalLM"],
    model_types = ["mistral"],
    load = Mistral::load,
)]
pub struct Mistral(CandleLm<candle_model::Model>);
zoo_core::delegate_causal_lm!(Mistral);

/// transformers' MistralConfig default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

candle_load!(
    Mistral,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(DEFAULT_ROPE_THETA),
        refuse_past_sliding_window: true,
        fix: Some(Mistral::fix_config),
        ..ConfigQuirks::default()
    }
);

impl Mistral {
    /// candle's window admits one key too many: `w - 1` gives transformers' window.
    fn fix_config(_: &SafetensorsSource, config: &mut Value) -> Result<()> {
        if let Some(w) = config["sliding_window"].as_u64() {
            config["sliding_window"] = json!(w.saturating_sub(1));
        }
        Ok(())
    }
}
