//! Qwen2 / Qwen2.5 from safetensors (`Qwen2ForCausalLM`).
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation: transformers' `modeling_qwen2.py`. Built on
//! candle-transformers' `qwen2`.
//!
//! candle's config wants `sliding_window` as a number and applies it to every layer;
//! transformers writes `null` or ignores it unless `use_sliding_window`. Released
//! Qwen2/2.5 models do not use it, so with `use_sliding_window: false` the window is
//! opened to the whole context, and with `true` the load fails clearly (candle's mask
//! admits one key too many and nothing masks during decode).

use candle_core::{Device, Tensor};
use candle_transformers::models::qwen2 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Qwen2 / Qwen2.5 (safetensors, f32 on CPU).
#[register_model(
    name = "qwen2",
    format = safetensors,
    hf_architectures = ["Qwen2ForCausalLM"],
    model_types = ["qwen2"],
    load = Qwen2::load,
)]
pub struct Qwen2 {
    model: candle_model::ModelForCausalLM,
    info: ModelInfo,
}

/// transformers' Qwen2Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Qwen2 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let src = source.expect_safetensors(Self::ENTRY.name)?;
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        #[allow(unused_mut)]
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        if config["use_sliding_window"].as_bool() == Some(true) {
            return Err(zoo_core::Error::Config {
                path: src.config_path.clone(),
                what: "`qwen2` config".into(),
                detail: "`use_sliding_window: true` is not supported".into(),
                hint: "no released Qwen2 model uses it; set it to false if the model was trained without".into(),
            });
        }
        config["sliding_window"] = serde_json::json!(usize::MAX / 4);
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::ModelForCausalLM::new(&config, vb)?;
        Ok(Self { model, info })
    }
}

impl CausalLM for Qwen2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
