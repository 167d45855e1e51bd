//! Phi-3 from safetensors (`Phi3ForCausalLM`).
//!
//! Paper: "Phi-3 Technical Report" (Abdin et al., 2024). Reference implementation: transformers' `modeling_phi3.py`. Built on
//! candle-transformers' `phi3`.

use candle_transformers::models::phi3 as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{CandleLm, ConfigQuirks};

/// Phi-3 (safetensors, f32 on CPU).
#[register_model(
    name = "phi3",
    format = safetensors,
    hf_architectures = ["Phi3ForCausalLM"],
    model_types = ["phi3"],
    load = Phi3::load,
)]
pub struct Phi3(CandleLm<candle_model::Model>);
zoo_core::delegate_causal_lm!(Phi3);

/// transformers' Phi3Config default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Phi3 {
    fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let quirks = ConfigQuirks {
            rope_theta: Some(DEFAULT_ROPE_THETA),
            ..ConfigQuirks::default()
        };
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
