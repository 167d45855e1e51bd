//! Helium from safetensors (`HeliumForCausalLM`, `helium`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `helium`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::helium as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Helium (safetensors, f32 on CPU).
#[register_model(
    name = "helium",
    format = safetensors,
    hf_architectures = ["HeliumForCausalLM"],
    model_types = ["helium"],
    load = Helium::load,
)]
pub struct Helium(CandleLm<candle_model::Model>);

candle_load!(Helium, candle_model::Model, ConfigQuirks::default());
