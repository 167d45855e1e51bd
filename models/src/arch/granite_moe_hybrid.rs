//! Granite 4.0 hybrid from safetensors (`GraniteMoeHybridForCausalLM`,
//! `granitemoehybrid`), in its dense attention-only form (granite-4.0-micro): Granite's
//! four multipliers (embedding, attention, residual, logits) on a Llama-like decoder with
//! a gated shared MLP.
//!
//! Reference implementation: transformers' `modeling_granitemoehybrid.py`. Built on
//! candle-transformers' `granitemoehybrid`, whose external cache this file owns and
//! rebuilds on reset. candle applies the multipliers itself.
//!
//! candle runs only part of what the config describes, and some of it silently
//! otherwise; this file refuses with an error:
//! - Mamba layers (`mamba` / transformers 5's `linear_attention`), and a config without
//!   layer kinds, which transformers reads as all Mamba (candle: all attention);
//! - `num_local_experts > 0`: candle drops the MoE block without a word;
//! - `position_embedding_type` other than `rope` (transformers' default is none, NoPE;
//!   candle always rotates);
//! - untied embeddings (candle always projects with the embedding), attention biases,
//!   a `head_dim` other than hidden / heads, an activation other than SiLU, rope scaling.
//!
//! transformers 5 writes the layer kinds as `full_attention`, candle's enum wants
//! `attention`: mapped here (`layers_block_type`, the 4.x key, is read too).

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::granitemoehybrid as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{refuse_rope_scaling, unsupported};

/// Granite 4.0 hybrid, attention-only dense form (safetensors, f32 on CPU).
#[register_model(
    name = "granite-moe-hybrid",
    format = safetensors,
    hf_architectures = ["GraniteMoeHybridForCausalLM"],
    model_types = ["granitemoehybrid"],
    load = GraniteMoeHybrid::load,
)]
pub struct GraniteMoeHybrid {
    model: candle_model::GraniteMoeHybrid,
    cache: candle_model::GraniteMoeHybridCache,
    /// What `reset_cache` rebuilds the cache from.
    config: candle_model::GraniteMoeHybridInternalConfig,
    dtype: DType,
    info: ModelInfo,
}

/// transformers' GraniteMoeHybridConfig default (its default rope parameters).
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl GraniteMoeHybrid {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        Self::fix_config(src, &mut config)?;
        let config: candle_model::GraniteMoeHybridConfig =
            src.parse_config_value(Self::ENTRY.name, config)?;
        let config = config.into_config(false);
        let (vb, dtype) = src.var_builder(device)?;
        let model = candle_model::GraniteMoeHybrid::load(vb, &config)?;
        let cache = candle_model::GraniteMoeHybridCache::new(true, dtype, &config, device)?;
        Ok(Self {
            model,
            cache,
            config,
            dtype,
            info,
        })
    }

    /// See the file's comment: the layer kinds renamed, or an error for what candle
    /// does not compute as transformers does.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        let kinds = config
            .get("layer_types")
            .filter(|v| !v.is_null())
            .or_else(|| config.get("layers_block_type"))
            .and_then(|v| v.as_array())
            .cloned()
            .ok_or_else(|| {
                refuse(
                    "no `layer_types`: transformers makes every layer a Mamba layer".into(),
                    "zoo runs the attention-only Granite 4.0 models (granite-4.0-micro)",
                )
            })?;
        for kind in &kinds {
            if !matches!(kind.as_str(), Some("attention" | "full_attention")) {
                return Err(refuse(
                    format!("layer kind {kind} is not supported"),
                    "candle's GraniteMoeHybrid has no Mamba layers; zoo runs the attention-only Granite 4.0 models (granite-4.0-micro)",
                ));
            }
        }
        config["layer_types"] = json!(vec!["attention"; kinds.len()]);
        if config["num_local_experts"].as_u64() != Some(0) {
            return Err(refuse(
                format!("`num_local_experts: {}` is not supported", config["num_local_experts"]),
                "candle's GraniteMoeHybrid has no MoE block (it would skip it); only the dense models (0 experts) load",
            ));
        }
        if config["position_embedding_type"].as_str() != Some("rope") {
            return Err(refuse(
                format!(
                    "`position_embedding_type: {}` is not supported",
                    config["position_embedding_type"]
                ),
                "candle always applies rotary embeddings; only `rope` models load",
            ));
        }
        if config["tie_word_embeddings"].as_bool() != Some(true) {
            return Err(refuse(
                "untied word embeddings are not supported".into(),
                "candle's GraniteMoeHybrid always projects with the input embedding",
            ));
        }
        if config["attention_bias"].as_bool() == Some(true) {
            return Err(refuse(
                "`attention_bias: true` is not supported".into(),
                "candle's GraniteMoeHybrid attention has no biases",
            ));
        }
        let act = config["hidden_act"].as_str().unwrap_or("silu");
        if act != "silu" {
            return Err(refuse(
                format!("`hidden_act: {act}` is not supported"),
                "candle's GraniteMoeHybrid MLP uses SiLU",
            ));
        }
        let (hidden, heads) = (
            config["hidden_size"].as_u64(),
            config["num_attention_heads"].as_u64(),
        );
        if let (Some(d), Some(h), Some(n)) = (config["head_dim"].as_u64(), hidden, heads) {
            if n == 0 || d != h / n {
                return Err(refuse(
                    format!("`head_dim: {d}` differs from hidden_size / num_attention_heads"),
                    "candle's GraniteMoeHybrid derives the head size from hidden_size",
                ));
            }
        }
        refuse_rope_scaling(src, Self::ENTRY.name)?;
        // Read from config.json by `model_info` (candle's field takes one id only).
        config["eos_token_id"] = Value::Null;
        config["bos_token_id"] = Value::Null;
        Ok(())
    }
}

impl CausalLM for GraniteMoeHybrid {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(
            self.model
                .forward(input_ids, seqlen_offset, &mut self.cache)?,
        )
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.cache = candle_model::GraniteMoeHybridCache::new(
            true,
            self.dtype,
            &self.config,
            &self.info.device,
        )?;
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
