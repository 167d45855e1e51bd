//! Qwen3-MoE from safetensors (`Qwen3MoeForCausalLM`, `qwen3_moe`).
//!
//! Reference implementation: transformers' `modeling_qwen3_moe.py`. Built on
//! candle-transformers' `qwen3_moe` (Qwen3's attention with q/k norms, a softmax
//! router over top-k experts), which computes what transformers computes for the
//! configs this file lets through; on CPU it takes its plain expert loop (with
//! candle's `cuda` feature it would switch to a fused kernel, which zoo does not
//! enable). What candle does differently:
//!
//! - its config reads names transformers 5 does not write: `num_experts` (written as
//!   `num_local_experts`, its attribute_map), `max_window_layers` (required, unused)
//!   and `head_dim` (transformers' Qwen3MoeConfig has none and uses
//!   `hidden_size / num_attention_heads`): this file fills each from what transformers
//!   reads;
//! - it ignores `mlp_only_layers` and `rope_scaling` and fails on
//!   `use_sliding_window`: refused.

use candle_transformers::models::qwen3_moe as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{candle_load, unsupported, CandleLm, ConfigQuirks};

/// Qwen3-MoE (safetensors, f32 on CPU).
#[register_model(
    name = "qwen3-moe",
    format = safetensors,
    hf_architectures = ["Qwen3MoeForCausalLM"],
    model_types = ["qwen3_moe"],
    load = Qwen3Moe::load,
)]
pub struct Qwen3Moe(CandleLm<candle_model::ModelForCausalLM>);

candle_load!(
    Qwen3Moe,
    candle_model::ModelForCausalLM,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' Qwen3MoeConfig default
        fix: Some(Self::fix_config),
        ..ConfigQuirks::default()
    }
);

impl Qwen3Moe {
    /// See the file's comment: candle's names filled from transformers', and what
    /// candle would compute differently refused.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<()> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        if config["use_sliding_window"].as_bool() == Some(true) {
            return Err(refuse(
                "`use_sliding_window: true` is not supported".into(),
                "no released Qwen3-MoE model uses it; set it to false if the model was trained without",
            ));
        }
        let mlp_only = &config["mlp_only_layers"];
        if mlp_only.as_array().is_some_and(|l| !l.is_empty()) {
            return Err(refuse(
                format!("`mlp_only_layers: {mlp_only}` is not supported"),
                "candle's Qwen3-MoE ignores mlp_only_layers and would build experts there",
            ));
        }
        if config["num_experts"].is_null() {
            config["num_experts"] = config["num_local_experts"].clone();
        }
        if config["max_window_layers"].is_null() {
            config["max_window_layers"] = config["num_hidden_layers"].clone();
        }
        if config["head_dim"].is_null() {
            let (hidden, heads) = (&config["hidden_size"], &config["num_attention_heads"]);
            if let (Some(h), Some(n)) = (hidden.as_u64(), heads.as_u64().filter(|&n| n > 0)) {
                config["head_dim"] = json!(h / n);
            }
        }
        Ok(())
    }
}
