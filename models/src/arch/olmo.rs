//! Olmo from safetensors (`OlmoForCausalLM`, `olmo`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `olmo`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::olmo as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Olmo (safetensors, f32 on CPU).
#[register_model(
    name = "olmo",
    format = safetensors,
    hf_architectures = ["OlmoForCausalLM"],
    model_types = ["olmo"],
    load = Olmo::load,
)]
pub struct Olmo(CandleLm<candle_model::Model>);

candle_load!(Olmo, candle_model::Model, ConfigQuirks::default());
