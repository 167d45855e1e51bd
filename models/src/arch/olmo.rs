//! Olmo from safetensors (`OlmoForCausalLM`, `olmo`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `olmo`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::olmo as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{CandleLm, ConfigQuirks};

/// Olmo (safetensors, f32 on CPU).
#[register_model(
    name = "olmo",
    format = safetensors,
    hf_architectures = ["OlmoForCausalLM"],
    model_types = ["olmo"],
    load = Olmo::load,
)]
pub struct Olmo(CandleLm<candle_model::Model>);
zoo_core::delegate_causal_lm!(Olmo);

impl Olmo {
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
