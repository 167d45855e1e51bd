//! SmolLM3 from safetensors (`SmolLM3ForCausalLM`, `smollm3`).
//!
//! Reference implementation: transformers' `modeling_smollm3.py`. Built on
//! candle-transformers' `smol::smollm3`, which computes what transformers computes,
//! NoPE layers included (`no_rope_layers`, else every `no_rope_layer_interval`-th
//! layer), for the configs this file lets through. What candle does differently:
//!
//! - it ignores `rope_scaling` (SmolLM3's long-context YaRN) and takes the head size
//!   as `hidden_size / num_attention_heads` whatever `head_dim` says: both are refused
//!   when they would change the result;
//! - it fails on `use_sliding_window: true`: refused here with the reason;
//! - it reads `eos_token_id` as one id: a list (transformers allows one) is dropped
//!   before parsing, as candle never uses it (zoo reads the ids from config.json).

use candle_transformers::models::smol::smollm3 as candle_model;
use serde_json::Value;
use zoo_core::registry::Registered;
use zoo_core::{Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{candle_load, refuse_other_head_dim, unsupported, CandleLm, ConfigQuirks};

/// SmolLM3 (safetensors, f32 on CPU).
#[register_model(
    name = "smollm3",
    format = safetensors,
    hf_architectures = ["SmolLM3ForCausalLM"],
    model_types = ["smollm3"],
    load = SmolLM3::load,
)]
pub struct SmolLM3(CandleLm<candle_model::ModelForCausalLM>);

/// transformers' SmolLM3Config default (`default_theta`).
const DEFAULT_ROPE_THETA: f64 = 2_000_000.0;

candle_load!(
    SmolLM3,
    candle_model::ModelForCausalLM,
    ConfigQuirks {
        rope_theta: Some(DEFAULT_ROPE_THETA),
        fix: Some(Self::fix_config),
        ..ConfigQuirks::default()
    }
);

impl SmolLM3 {
    /// See the file's comment: refuse what candle would compute differently, drop an
    /// eos list candle cannot parse and does not use.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        if config["use_sliding_window"].as_bool() == Some(true) {
            return Err(refuse(
                "`use_sliding_window: true` is not supported".into(),
                "candle's SmolLM3 has no sliding window; SmolLM3-3B does not use one",
            ));
        }
        refuse_other_head_dim(src, Self::ENTRY.name, config)?;
        if config["eos_token_id"].is_array() {
            config["eos_token_id"] = Value::Null;
        }
        Ok(())
    }
}
