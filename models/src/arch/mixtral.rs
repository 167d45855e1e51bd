//! Mixtral (sparse mixture of experts) from safetensors (`MixtralForCausalLM`).
//!
//! Paper: "Mixtral of Experts" (Jiang et al., 2024). Reference implementation: transformers' `modeling_mixtral.py`. Built on
//! candle-transformers' `mixtral`.
//!
//! candle's Mixtral config does not deserialize from a plain config.json: it wants
//! `use_flash_attn`, and `sliding_window` as a number where transformers writes `null`
//! (patched here: off, and with a window the load fails clearly, as candle applies it
//! only inside one forward call). It has no `clear_kv_cache`: a reset rebuilds the
//! model from the memory-mapped weights.

use candle_core::{Device, Tensor};
use candle_transformers::models::mixtral as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

/// Mixtral (safetensors, f32 on CPU).
#[register_model(
    name = "mixtral",
    format = safetensors,
    hf_architectures = ["MixtralForCausalLM"],
    model_types = ["mixtral"],
    load = Mixtral::load,
)]
pub struct Mixtral {
    model: candle_model::Model,
    /// What `reset_cache` rebuilds the model from: candle's Mixtral has no
    /// `clear_kv_cache`.
    config: candle_model::Config,
    vb: candle_nn::VarBuilder<'static>,
    info: ModelInfo,
}

/// transformers' MixtralConfig default.
const DEFAULT_ROPE_THETA: f64 = 1_000_000.0;

impl Mixtral {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        if !config["sliding_window"].is_null() {
            return Err(zoo_core::Error::Config {
                path: src.config_path.clone(),
                what: "`mixtral` config".into(),
                detail: format!("sliding_window {} is not supported", config["sliding_window"]),
                hint: "Mixtral 8x7B and 8x22B have no window (null); set it to null if the model was trained without".into(),
            });
        }
        config["sliding_window"] = serde_json::json!(usize::MAX / 4);
        config["use_flash_attn"] = serde_json::json!(false);
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb.clone())?;
        Ok(Self {
            model,
            config,
            vb,
            info,
        })
    }
}

impl CausalLM for Mixtral {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model = candle_model::Model::new(&self.config, self.vb.clone())?;
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
