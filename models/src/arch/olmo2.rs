//! Olmo2 from safetensors (`Olmo2ForCausalLM`, `olmo2`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `olmo2`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::olmo2 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{CandleLm, ConfigQuirks};

/// Olmo2 (safetensors, f32 on CPU).
#[register_model(
    name = "olmo2",
    format = safetensors,
    hf_architectures = ["Olmo2ForCausalLM"],
    model_types = ["olmo2"],
    load = Olmo2::load,
)]
pub struct Olmo2(CandleLm<candle_model::Model>);
zoo_core::delegate_causal_lm!(Olmo2);

impl Olmo2 {
    fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let quirks = ConfigQuirks::default();
        CandleLm::load(
            Self::ENTRY.name,
            src,
            device,
            quirks,
            candle_model::Model::new,
            candle_model::Model::forward,
            candle_model::Model::clear_kv_cache,
        )
        .map(Self)
    }
}
