//! Starcoder2 from safetensors (`Starcoder2ForCausalLM`, `starcoder2`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `starcoder2`.
//! (Scaffolded by `cargo xtask new-arch`; say here what differs from candle and why.)

use candle_core::{Device, Tensor};
use candle_transformers::models::starcoder2 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Starcoder2 (safetensors, f32 on CPU).
#[register_model(
    name = "starcoder2",
    format = safetensors,
    hf_architectures = ["Starcoder2ForCausalLM"],
    model_types = ["starcoder2"],
    load = Starcoder2::load,
)]
pub struct Starcoder2 {
    model: candle_model::Model,
    info: ModelInfo,
}

impl Starcoder2 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let src = source.expect_safetensors(Self::ENTRY.name)?;
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        // `None`: a config.json without rope_theta is an error. Put the default the
        // architecture's transformers config documents here if it has one.
        let config = src.normalised_config(None)?;
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb)?;
        Ok(Self { model, info })
    }
}

impl CausalLM for Starcoder2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
