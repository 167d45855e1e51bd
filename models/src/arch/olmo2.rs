//! Olmo2 from safetensors (`Olmo2ForCausalLM`, `olmo2`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `olmo2`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::olmo2 as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Olmo2 (safetensors, f32 on CPU).
#[register_model(
    name = "olmo2",
    format = safetensors,
    hf_architectures = ["Olmo2ForCausalLM"],
    model_types = ["olmo2"],
    load = Olmo2::load,
)]
pub struct Olmo2(CandleLm<candle_model::Model>);

candle_load!(Olmo2, candle_model::Model, ConfigQuirks::default());
