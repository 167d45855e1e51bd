//! Starcoder2 from safetensors (`Starcoder2ForCausalLM`, `starcoder2`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `starcoder2`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::starcoder2 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{CandleLm, ConfigQuirks};

/// Starcoder2 (safetensors, f32 on CPU).
#[register_model(
    name = "starcoder2",
    format = safetensors,
    hf_architectures = ["Starcoder2ForCausalLM"],
    model_types = ["starcoder2"],
    load = Starcoder2::load,
)]
pub struct Starcoder2(CandleLm<candle_model::Model>);
zoo_core::delegate_causal_lm!(Starcoder2);

impl Starcoder2 {
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
