//! Qwen3 from safetensors (`Qwen3ForCausalLM`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation: transformers' `modeling_qwen3.py`. Built on
//! candle-transformers' `qwen3`.
//!
//! Sliding-window attention (`use_sliding_window`) is not supported by candle's
//! model; a config that enables it is refused at load.

use candle_transformers::models::qwen3 as candle_model;
use serde_json::Value;
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{unsupported, CandleLm, ConfigQuirks};

/// Qwen3 (safetensors, f32 on CPU).
#[register_model(
    name = "qwen3",
    format = safetensors,
    hf_architectures = ["Qwen3ForCausalLM"],
    model_types = ["qwen3"],
    load = Qwen3::load,
)]
pub struct Qwen3(CandleLm<candle_model::ModelForCausalLM>);
zoo_core::delegate_causal_lm!(Qwen3);

/// transformers' Qwen3Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Qwen3 {
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

    /// See the file's comment: candle's model has no sliding window.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        if config["use_sliding_window"].as_bool() == Some(true) {
            return Err(unsupported(
                src,
                Self::ENTRY.name,
                "`use_sliding_window: true` is not supported",
                "no released Qwen3 model uses it; set it to false if the model was trained without",
            ));
        }
        Ok(())
    }
}
