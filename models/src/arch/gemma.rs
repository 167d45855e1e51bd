//! Gemma (1) from safetensors (`GemmaForCausalLM`).
//!
//! Paper: "Gemma: Open Models Based on Gemini Research and Technology" (2024). Reference implementation: transformers' `modeling_gemma.py`. Built on
//! candle-transformers' `gemma`, which refuses a config.json that has both
//! `hidden_act` and `hidden_activation` (as transformers writes it); patched here.

use candle_transformers::models::gemma as candle_model;
use serde_json::json;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Gemma (safetensors, f32 on CPU).
#[register_model(
    name = "gemma",
    format = safetensors,
    hf_architectures = ["GemmaForCausalLM"],
    model_types = ["gemma"],
    load = Gemma::load,
)]
pub struct Gemma(CandleLm<candle_model::Model>);

candle_load!(
    Gemma,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' GemmaConfig default
        context_length: Some(8192),
        fix: Some(|_, config| {
            // transformers uses `hidden_activation` (gelu_pytorch_tanh when absent) and keeps
            // the legacy `hidden_act` only for old configs; candle refuses both at once.
            if config["hidden_activation"].is_null() {
                config["hidden_activation"] = json!("gelu_pytorch_tanh");
            }
            if let Some(o) = config.as_object_mut() {
                o.remove("hidden_act");
            }
            Ok(())
        }),
        ..ConfigQuirks::default()
    },
    new = |c, vb| candle_model::Model::new(false, c, vb)
);
