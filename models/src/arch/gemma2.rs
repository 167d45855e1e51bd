//! Gemma 2 from safetensors (`Gemma2ForCausalLM`).
//!
//! Paper: "Gemma 2: Improving Open Language Models at a Practical Size" (2024). Reference implementation: transformers' `modeling_gemma2.py`. Built on
//! candle-transformers' `gemma2`.
//!
//! candle's Gemma 2 does not mask its local layers' sliding window at all. Within the
//! window local and global attention agree, so a sequence longer than the window
//! (4096 in the released models) is refused with an error instead of computed wrongly.

use candle_core::{Device, Tensor};
use candle_transformers::models::gemma2 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

/// Gemma 2 (safetensors, f32 on CPU).
#[register_model(
    name = "gemma2",
    format = safetensors,
    hf_architectures = ["Gemma2ForCausalLM"],
    model_types = ["gemma2"],
    load = Gemma2::load,
)]
pub struct Gemma2 {
    model: candle_model::Model,
    /// The local layers' sliding window; see `forward`.
    window: Option<usize>,
    info: ModelInfo,
}

/// transformers' Gemma2Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Gemma2 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, Some(8192), device)?;
        let config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        let window = config["sliding_window"].as_u64().map(|w| w as usize);
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(false, &config, vb)?;
        Ok(Self {
            model,
            window,
            info,
        })
    }
}

impl CausalLM for Gemma2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        if let Some(w) = self.window {
            let end = seqlen_offset + input_ids.dim(1)?;
            if end > w {
                return Err(zoo_core::Error::PromptTooLong {
                    prompt_tokens: end,
                    context_length: w,
                });
            }
        }
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
