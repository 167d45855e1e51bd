//! Helium from safetensors (`HeliumForCausalLM`, `helium`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `helium`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::helium as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{CandleLm, ConfigQuirks};

/// Helium (safetensors, f32 on CPU).
#[register_model(
    name = "helium",
    format = safetensors,
    hf_architectures = ["HeliumForCausalLM"],
    model_types = ["helium"],
    load = Helium::load,
)]
pub struct Helium(CandleLm<candle_model::Model>);
zoo_core::delegate_causal_lm!(Helium);

impl Helium {
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
