//! Qwen1.5-MoE / Qwen2-MoE from safetensors (`Qwen2MoeForCausalLM`, `qwen2_moe`).
//!
//! Reference implementation: transformers' `modeling_qwen2_moe.py`. Built on
//! candle-transformers' `qwen2_moe`, which computes what transformers computes (softmax
//! router, top-k experts, the sigmoid-gated shared expert) for the configs this file
//! lets through. What candle does differently:
//!
//! - its config wants `sliding_window` as a number and applies it to every layer;
//!   transformers writes 0 when `use_sliding_window` is false (candle would then let
//!   each position see only itself): the window is opened to the whole context, and a
//!   sliding layer is refused (candle's mask admits one key too many and nothing masks
//!   during decode);
//! - it always loads q/k/v biases and an untied `lm_head`, takes the head size as
//!   `hidden_size / num_attention_heads`, ignores `mlp_only_layers` and `rope_scaling`:
//!   configs where these matter are refused.

use candle_transformers::models::qwen2_moe as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{candle_load, refuse_other_head_dim, unsupported, CandleLm, ConfigQuirks};

/// Qwen2-MoE (safetensors, f32 on CPU).
#[register_model(
    name = "qwen2-moe",
    format = safetensors,
    hf_architectures = ["Qwen2MoeForCausalLM"],
    model_types = ["qwen2_moe"],
    load = Qwen2Moe::load,
)]
pub struct Qwen2Moe(CandleLm<candle_model::Model>);

candle_load!(
    Qwen2Moe,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' Qwen2MoeConfig default
        fix: Some(Self::fix_config),
        ..ConfigQuirks::default()
    }
);

impl Qwen2Moe {
    /// See the file's comment: refuse what candle would compute differently, open the
    /// window, fill `max_window_layers` (required by candle's config, unused).
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        let sliding = config["layer_types"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "sliding_attention"));
        if config["use_sliding_window"].as_bool() == Some(true) || sliding {
            return Err(refuse(
                "sliding-window attention is not supported".into(),
                "no released Qwen2-MoE model uses it; set use_sliding_window to false if the model was trained without",
            ));
        }
        if config["tie_word_embeddings"].as_bool() == Some(true) {
            return Err(refuse(
                "`tie_word_embeddings: true` is not supported".into(),
                "candle's Qwen2-MoE always reads a separate lm_head.weight",
            ));
        }
        if config["qkv_bias"].as_bool() == Some(false) {
            return Err(refuse(
                "`qkv_bias: false` is not supported".into(),
                "candle's Qwen2-MoE always reads q/k/v biases",
            ));
        }
        let mlp_only = &config["mlp_only_layers"];
        if mlp_only.as_array().is_some_and(|l| !l.is_empty()) {
            return Err(refuse(
                format!("`mlp_only_layers: {mlp_only}` is not supported"),
                "candle's Qwen2-MoE ignores mlp_only_layers and would build experts there",
            ));
        }
        refuse_other_head_dim(src, Self::ENTRY.name, config)?;
        config["sliding_window"] = json!(zoo_core::source::MAX_CONTEXT);
        if config["max_window_layers"].is_null() {
            config["max_window_layers"] = config["num_hidden_layers"].clone();
        }
        Ok(())
    }
}
