//! DeepSeek-V2 from safetensors (`DeepseekV2ForCausalLM`, `deepseek_v2`): multi-head
//! latent attention (compressed KV, decoupled interleaved rotary part) and a
//! mixture of routed plus shared experts after the first dense layers.
//!
//! Paper: "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
//! Model" (DeepSeek-AI, 2024). Reference implementation: transformers'
//! `modeling_deepseek_v2.py`. Built on candle-transformers' `deepseek2`.
//!
//! What candle reads differently from the config.json transformers writes, patched
//! here:
//! - `n_group` / `topk_group` are numbers in candle and `null` in transformers' default;
//!   greedy routing does not read them, so `null` becomes 1;
//! - transformers 5 keeps YaRN in `rope_parameters` (`rope_type: yarn`), candle reads
//!   `rope_scaling` with `type: yarn`: copied over (all of YaRN's fields required).
//!
//! Refused, because candle would compute something else than transformers:
//! - `topk_method: group_limited_greedy`: candle picks the groups from the expert
//!   scores instead of the group scores;
//! - `norm_topk_prob: true`: transformers ignores it (always scales by
//!   `routed_scaling_factor`), candle normalises the top-k weights;
//! - `moe_layer_freq` other than 1: transformers makes every layer from
//!   `first_k_dense_replace` on a MoE layer, candle only every `moe_layer_freq`-th;
//! - `mlp_bias: true`: candle's MLPs have no biases;
//! - rope scaling other than YaRN (candle implements only YaRN).
//!
//! DeepSeek-V2 and V2-Lite (greedy routing, no normalisation, frequency 1) load.

use candle_transformers::models::deepseek2 as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{unsupported, CandleLm, ConfigQuirks};

/// DeepSeek-V2 (safetensors, f32 on CPU).
#[register_model(
    name = "deepseek-v2",
    format = safetensors,
    hf_architectures = ["DeepseekV2ForCausalLM"],
    model_types = ["deepseek_v2"],
    load = DeepseekV2::load,
)]
pub struct DeepseekV2(CandleLm<candle_model::DeepSeekV2>);

/// transformers' DeepseekV2Config default (its default rope parameters).
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The fields candle's YaRN reads, all required.
const YARN_FIELDS: [&str; 6] = [
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "factor",
];

impl DeepseekV2 {
    fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let quirks = ConfigQuirks {
            rope_theta: Some(DEFAULT_ROPE_THETA),
            fix: Some(Self::fix_config),
            applies_rope_scaling: true, // YaRN, see fix_config
            ..ConfigQuirks::default()
        };
        CandleLm::load(
            Self::ENTRY.name,
            src,
            device,
            quirks,
            candle_model::DeepSeekV2::new,
            candle_model::DeepSeekV2::forward,
            candle_model::DeepSeekV2::clear_kv_cache,
        )
        .map(Self)
    }

    /// See the file's comment: the patches, or an error for what candle computes
    /// differently.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        let method = config["topk_method"].as_str().unwrap_or("greedy");
        if method != "greedy" {
            return Err(refuse(
                format!("`topk_method: {method}` is not supported"),
                "candle implements group-limited routing incorrectly; DeepSeek-V2-Lite uses greedy",
            ));
        }
        if config["norm_topk_prob"].as_bool() == Some(true) {
            return Err(refuse(
                "`norm_topk_prob: true` is not supported".into(),
                "transformers ignores it and candle normalises; released DeepSeek-V2 models set false",
            ));
        }
        if config["moe_layer_freq"].as_u64().is_some_and(|f| f != 1) {
            return Err(refuse(
                format!("`moe_layer_freq: {}` is not supported", config["moe_layer_freq"]),
                "transformers makes every layer after first_k_dense_replace a MoE layer (frequency 1)",
            ));
        }
        if config["mlp_bias"].as_bool() == Some(true) {
            return Err(refuse(
                "`mlp_bias: true` is not supported".into(),
                "candle's DeepSeek-V2 MLPs have no biases",
            ));
        }
        for key in ["n_group", "topk_group"] {
            if config[key].is_null() {
                config[key] = json!(1);
            }
        }
        if let Some(scaling) = src.rope_scaling() {
            let kind = scaling["type"].as_str().or(scaling["rope_type"].as_str());
            if kind != Some("yarn") {
                return Err(refuse(
                    format!("rope scaling {scaling} is not supported"),
                    "candle's DeepSeek-V2 implements only YaRN",
                ));
            }
            if let Some(missing) = YARN_FIELDS.iter().find(|k| scaling[**k].is_null()) {
                return Err(refuse(
                    format!("YaRN rope scaling without `{missing}`: {scaling}"),
                    "give every YaRN field (as DeepSeek-V2's config.json does)",
                ));
            }
            let mut scaling = scaling;
            scaling["type"] = json!("yarn");
            config["rope_scaling"] = scaling;
        }
        Ok(())
    }
}
