//! Helium from safetensors (`HeliumForCausalLM`, `helium`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `helium`.
//! (Scaffolded by `cargo xtask new-arch`; say here what differs from candle and why.)

use candle_core::{Device, Tensor};
use candle_transformers::models::helium as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Helium (safetensors, f32 on CPU).
#[register_model(
    name = "helium",
    format = safetensors,
    hf_architectures = ["HeliumForCausalLM"],
    model_types = ["helium"],
    load = Helium::load,
)]
pub struct Helium {
    model: candle_model::Model,
    info: ModelInfo,
}

impl Helium {
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

impl CausalLM for Helium {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
