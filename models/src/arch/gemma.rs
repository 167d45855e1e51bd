//! Gemma (1) from safetensors (`GemmaForCausalLM`).
//!
//! Paper: "Gemma: Open Models Based on Gemini Research and Technology" (2024). Reference implementation: transformers' `modeling_gemma.py`. Built on
//! candle-transformers' `gemma`, which refuses a config.json that has both
//! `hidden_act` and `hidden_activation` (as transformers writes it); patched here.

use candle_core::{Device, Tensor};
use candle_transformers::models::gemma as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Gemma (safetensors, f32 on CPU).
#[register_model(
    name = "gemma",
    format = safetensors,
    hf_architectures = ["GemmaForCausalLM"],
    model_types = ["gemma"],
    load = Gemma::load,
)]
pub struct Gemma {
    model: candle_model::Model,
    info: ModelInfo,
}

/// transformers' GemmaConfig default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Gemma {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let src = source.expect_safetensors(Self::ENTRY.name)?;
        let info = src.model_info(Self::ENTRY.name, Some(8192), device)?;
        #[allow(unused_mut)]
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        // transformers uses `hidden_activation` (gelu_pytorch_tanh when absent) and keeps
        // the legacy `hidden_act` only for old configs; candle refuses both at once.
        if config["hidden_activation"].is_null() {
            config["hidden_activation"] = serde_json::json!("gelu_pytorch_tanh");
        }
        if let Some(o) = config.as_object_mut() {
            o.remove("hidden_act");
        }
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(false, &config, vb)?;
        Ok(Self { model, info })
    }
}

impl CausalLM for Gemma {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
