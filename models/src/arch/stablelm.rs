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

use candle_core::{Device, Tensor};
use candle_transformers::models::stable_lm as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::unsupported;

/// StableLM (safetensors, f32 on CPU).
#[register_model(
    name = "stablelm",
    format = safetensors,
    hf_architectures = ["StableLmForCausalLM"],
    model_types = ["stablelm"],
    load = StableLm::load,
)]
pub struct StableLm {
    model: candle_model::Model,
    /// What `reset_cache` rebuilds the model from: candle's StableLM has no
    /// `clear_kv_cache`.
    config: candle_model::Config,
    vb: candle_nn::VarBuilder<'static>,
    info: ModelInfo,
}

// transformers' StableLmConfig defaults.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
const DEFAULT_PARTIAL_ROTARY_FACTOR: f64 = 0.25;

impl StableLm {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        Self::fix_config(src, &mut config)?;
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb.clone())?;
        Ok(Self {
            model,
            config,
            vb,
            info,
        })
    }

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
        if let Some(scaling) = src.rope_scaling() {
            return Err(refuse(
                &format!("rope scaling {scaling} is not supported"),
                "candle's StableLM ignores rope scaling; remove it to run within the trained context",
            ));
        }
        if config["partial_rotary_factor"].is_null() {
            config["partial_rotary_factor"] = json!(DEFAULT_PARTIAL_ROTARY_FACTOR);
        }
        config["use_cache"] = json!(true);
        Ok(())
    }
}

impl CausalLM for StableLm {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model = candle_model::Model::new(&self.config, self.vb.clone())?;
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
