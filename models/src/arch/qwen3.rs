//! Qwen3 from safetensors (`Qwen3ForCausalLM`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation: transformers' `modeling_qwen3.py`. Built on
//! candle-transformers' `qwen3`.
//!
//! Sliding-window attention (`use_sliding_window`) is not supported by candle's
//! model; a config that enables it is refused at load.

use candle_core::{Device, Tensor};
use candle_transformers::models::qwen3 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Qwen3 (safetensors, f32 on CPU).
#[register_model(
    name = "qwen3",
    format = safetensors,
    hf_architectures = ["Qwen3ForCausalLM"],
    model_types = ["qwen3"],
    load = Qwen3::load,
)]
pub struct Qwen3 {
    model: candle_model::ModelForCausalLM,
    info: ModelInfo,
}

/// transformers' Qwen3Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Qwen3 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let src = source.expect_safetensors(Self::ENTRY.name)?;
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        #[allow(unused_mut)]
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        if config["use_sliding_window"].as_bool() == Some(true) {
            return Err(zoo_core::Error::Config {
                path: src.config_path.clone(),
                what: "`qwen3` config".into(),
                detail: "`use_sliding_window: true` is not supported".into(),
                hint: "no released Qwen3 model uses it; set it to false if the model was trained without".into(),
            });
        }
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::ModelForCausalLM::new(&config, vb)?;
        Ok(Self { model, info })
    }
}

impl CausalLM for Qwen3 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
