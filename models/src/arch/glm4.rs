//! GLM-4 (the GLM-4-0414 family) from safetensors (`Glm4ForCausalLM`, `glm4`).
//!
//! Reference implementation: transformers' `modeling_glm4.py`. Built on
//! candle-transformers' `glm4_new` (candle's `glm4` is THUDM's remote-code layout),
//! which computes what transformers computes: interleaved rotary on the first
//! `partial_rotary_factor` of each head, the four sandwich norms, the fused
//! `gate_up_proj`. What candle does differently:
//!
//! - where config.json omits `head_dim` or `partial_rotary_factor`, candle takes
//!   `hidden_size / num_attention_heads` and a full rotation, where transformers'
//!   Glm4Config documents 128 and 0.5: this file writes transformers' defaults in;
//! - it ignores `rope_scaling`: refused.

use candle_transformers::models::glm4_new as candle_model;
use serde_json::{json, Value};
use zoo_core::{Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// GLM-4 (safetensors, f32 on CPU).
#[register_model(
    name = "glm4",
    format = safetensors,
    hf_architectures = ["Glm4ForCausalLM"],
    model_types = ["glm4"],
    load = Glm4::load,
)]
pub struct Glm4(CandleLm<candle_model::ModelForCausalLM>);

// transformers' Glm4Config defaults.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
const DEFAULT_HEAD_DIM: usize = 128;
const DEFAULT_PARTIAL_ROTARY_FACTOR: f64 = 0.5;

candle_load!(
    Glm4,
    candle_model::ModelForCausalLM,
    ConfigQuirks {
        rope_theta: Some(DEFAULT_ROPE_THETA),
        fix: Some(Self::fix_config),
        ..ConfigQuirks::default()
    }
);

impl Glm4 {
    /// See the file's comment: transformers' defaults where candle's differ (rope
    /// scaling is refused by the adapter).
    fn fix_config(_: &SafetensorsSource, config: &mut Value) -> Result<()> {
        if config["head_dim"].is_null() {
            config["head_dim"] = json!(DEFAULT_HEAD_DIM);
        }
        if config["partial_rotary_factor"].is_null() {
            config["partial_rotary_factor"] = json!(DEFAULT_PARTIAL_ROTARY_FACTOR);
        }
        Ok(())
    }
}
