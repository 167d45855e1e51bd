//! Mistral from safetensors (`MistralForCausalLM`).
//!
//! Paper: "Mistral 7B" (Jiang et al., 2023). Reference implementation: transformers' `modeling_mistral.py`. Built on
//! candle-transformers' `mistral`.
//!
//! candle's Mistral applies the sliding window only inside one forward call, with one
//! key too many (`i - j <= w` where transformers has `i - j < w`), and not at all over
//! the KV cache. Passing `w - 1` fixes the first; a sequence longer than the window
//! is refused with an error instead of computed wrongly (Mistral 7B v0.1, window 4096;
//! later versions have no window).

use candle_core::{Device, Tensor};
use candle_transformers::models::mistral as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

/// Mistral (safetensors, f32 on CPU).
#[register_model(
    name = "mistral",
    format = safetensors,
    hf_architectures = ["MistralForCausalLM"],
    model_types = ["mistral"],
    load = Mistral::load,
)]
pub struct Mistral {
    model: candle_model::Model,
    /// Mistral 7B v0.1's sliding window; see `forward`.
    window: Option<usize>,
    info: ModelInfo,
}

/// transformers' MistralConfig default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Mistral {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        let mut config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        let window = config["sliding_window"].as_u64().map(|w| w as usize);
        if let Some(w) = window {
            config["sliding_window"] = serde_json::json!(w.saturating_sub(1));
        }
        let config: candle_model::Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb)?;
        Ok(Self {
            model,
            window,
            info,
        })
    }
}

impl CausalLM for Mistral {
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
