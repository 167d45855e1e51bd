//! Phi-3 from safetensors (`Phi3ForCausalLM`).
//!
//! Paper: "Phi-3 Technical Report" (Abdin et al., 2024). Reference implementation: transformers' `modeling_phi3.py`. Built on
//! candle-transformers' `phi3`.

use candle_core::{Device, Tensor};
use candle_transformers::models::phi3 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Phi-3 (safetensors, f32 on CPU).
#[register_model(
    name = "phi3",
    format = safetensors,
    hf_architectures = ["Phi3ForCausalLM"],
    model_types = ["phi3"],
    load = Phi3::load,
)]
pub struct Phi3 {
    model: candle_model::Model,
    info: ModelInfo,
}

/// transformers' Phi3Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Phi3 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let src = source.expect_safetensors(Self::ENTRY.name)?;
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        #[allow(unused_mut)]
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb)?;
        Ok(Self { model, info })
    }
}

impl CausalLM for Phi3 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
