//! StableLM (3B-4E1T, StableLM 2 1.6B) from safetensors (`StableLmForCausalLM`,
//! `stablelm`).
//!
//! Reference implementation: transformers' `modeling_stablelm.py`. Built on
//! candle-transformers' `stable_lm`, which computes what transformers computes
//! (LayerNorm with biases, rotary on the first `partial_rotary_factor` of each head,
//! optional q/k/v biases) for the configs this file lets through. What candle does
//! differently:
//!
//! - it has no `clear_kv_cache`: a reset rebuilds the model from the memory-mapped
//!   weights (as `mixtral.rs` does);
//! - it keeps no cache at all when config.json says `use_cache: false` (a generation
//!   setting in transformers, not part of the model): set to true here;
//! - where config.json omits `partial_rotary_factor`, candle's config fails to parse;
//!   transformers' StableLmConfig documents 0.25, written in here;
//! - it has neither `qk_layernorm` nor `use_parallel_residual` (StableLM 2 12B), always
//!   reads an untied `lm_head`, and ignores `rope_scaling`: refused.

use candle_transformers::models::stable_lm as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{candle_load, unsupported, CandleLm, ConfigQuirks};

/// StableLM (safetensors, f32 on CPU).
#[register_model(
    name = "stablelm",
    format = safetensors,
    hf_architectures = ["StableLmForCausalLM"],
    model_types = ["stablelm"],
    load = StableLm::load,
)]
pub struct StableLm(CandleLm<candle_model::Model>);

// transformers' StableLmConfig defaults.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
const DEFAULT_PARTIAL_ROTARY_FACTOR: f64 = 0.25;

candle_load!(
    StableLm,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(DEFAULT_ROPE_THETA),
        fix: Some(StableLm::fix_config),
        ..ConfigQuirks::default()
    },
    reset = rebuild
);

impl StableLm {
    /// See the file's comment: refuse what candle would compute differently, fill
    /// transformers' defaults where candle has none, keep the cache on.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        let refuse = |detail: &str, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        for (key, hint) in [
            (
                "qk_layernorm",
                "candle's StableLM has no per-head q/k LayerNorm",
            ),
            (
                "use_parallel_residual",
                "candle's StableLM has only the sequential residual",
            ),
            (
                "tie_word_embeddings",
                "candle's StableLM always reads a separate lm_head.weight",
            ),
        ] {
            if config[key].as_bool() == Some(true) {
                return Err(refuse(&format!("`{key}: true` is not supported"), hint));
            }
        }
        if config["partial_rotary_factor"].is_null() {
            config["partial_rotary_factor"] = json!(DEFAULT_PARTIAL_ROTARY_FACTOR);
        }
        config["use_cache"] = json!(true);
        Ok(())
    }
}
