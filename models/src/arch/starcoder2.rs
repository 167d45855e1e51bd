//! Starcoder2 from safetensors (`Starcoder2ForCausalLM`, `starcoder2`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `starcoder2`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::starcoder2 as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Starcoder2 (safetensors, f32 on CPU).
#[register_model(
    name = "starcoder2",
    format = safetensors,
    hf_architectures = ["Starcoder2ForCausalLM"],
    model_types = ["starcoder2"],
    load = Starcoder2::load,
)]
pub struct Starcoder2(CandleLm<candle_model::Model>);

candle_load!(Starcoder2, candle_model::Model, ConfigQuirks::default());
