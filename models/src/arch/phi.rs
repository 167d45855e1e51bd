//! Phi-1.5 / Phi-2 from safetensors (`PhiForCausalLM`).
//!
//! Paper: "Textbooks Are All You Need II: phi-1.5 technical report" (Li et al., 2023).
//! Reference implementation: transformers' `modeling_phi.py`. Built on
//! candle-transformers' `phi`, whose forward takes no position: it reads the position
//! from its own KV cache. This file keeps the interface's position honest: a step at
//! position 0 starts a new sequence (the cache is cleared), and a step anywhere but
//! right after the cached positions is an error rather than a silent mix-up.

use candle_core::{Device, Tensor};
use candle_transformers::models::phi as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, Error, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

/// Phi-1.5 / Phi-2 (safetensors, f32 on CPU).
#[register_model(
    name = "phi",
    format = safetensors,
    hf_architectures = ["PhiForCausalLM"],
    model_types = ["phi"],
    load = Phi::load,
)]
pub struct Phi {
    model: candle_model::Model,
    /// Positions in candle's cache.
    cached: usize,
    info: ModelInfo,
}

/// transformers' PhiConfig default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Phi {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        let config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb)?;
        Ok(Self {
            model,
            cached: 0,
            info,
        })
    }
}

impl CausalLM for Phi {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        if seqlen_offset == 0 {
            self.model.clear_kv_cache();
            self.cached = 0;
        } else if seqlen_offset != self.cached {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "phi: a step at position {seqlen_offset} but the KV cache holds {} positions; continue from there or start again at 0",
                self.cached
            ))));
        }
        let logits = self.model.forward(input_ids)?;
        self.cached += input_ids.dim(1)?;
        last_position_logits(logits)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        self.cached = 0;
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
