//! Qwen2 / Qwen2.5 from safetensors (`Qwen2ForCausalLM`).
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation: transformers' `modeling_qwen2.py`. Built on
//! candle-transformers' `qwen2`.
//!
//! candle's config wants `sliding_window` as a number and applies it to every layer;
//! transformers writes `null` or ignores it unless `use_sliding_window`. Released
//! Qwen2/2.5 models do not use it, so with `use_sliding_window: false` the window is
//! opened to the whole context, and with `true` the load fails clearly (candle's mask
//! admits one key too many and nothing masks during decode).

use candle_transformers::models::qwen2 as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{unsupported, CandleLm, ConfigQuirks};

/// Qwen2 / Qwen2.5 (safetensors, f32 on CPU).
#[register_model(
    name = "qwen2",
    format = safetensors,
    hf_architectures = ["Qwen2ForCausalLM"],
    model_types = ["qwen2"],
    load = Qwen2::load,
)]
pub struct Qwen2(CandleLm<candle_model::ModelForCausalLM>);
zoo_core::delegate_causal_lm!(Qwen2);

/// transformers' Qwen2Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Qwen2 {
    fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let quirks = ConfigQuirks {
            rope_theta: Some(DEFAULT_ROPE_THETA),
            fix: Some(Self::fix_config),
            ..ConfigQuirks::default()
        };
        CandleLm::load(
            Self::ENTRY.name,
            src,
            device,
            quirks,
            candle_model::ModelForCausalLM::new,
            candle_model::ModelForCausalLM::forward,
            candle_model::ModelForCausalLM::clear_kv_cache,
        )
        .map(Self)
    }

    /// See the file's comment: the window opened to the whole context, or an error.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        if config["use_sliding_window"].as_bool() == Some(true) {
            return Err(unsupported(
                src,
                Self::ENTRY.name,
                "`use_sliding_window: true` is not supported",
                "no released Qwen2 model uses it; set it to false if the model was trained without",
            ));
        }
        config["sliding_window"] = json!(usize::MAX / 4);
        Ok(())
    }
}
