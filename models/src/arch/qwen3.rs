//! Qwen3 from safetensors (`Qwen3ForCausalLM`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation: transformers' `modeling_qwen3.py`. Built on
//! candle-transformers' `qwen3`.
//!
//! Sliding-window attention (`use_sliding_window`) is not supported by candle's
//! model; a config that enables it is refused at load.

use candle_transformers::models::qwen3 as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, refuse_sliding_window, CandleLm, ConfigQuirks};

/// Qwen3 (safetensors, f32 on CPU).
#[register_model(
    name = "qwen3",
    format = safetensors,
    hf_architectures = ["Qwen3ForCausalLM"],
    model_types = ["qwen3"],
    load = Qwen3::load,
)]
pub struct Qwen3(CandleLm<candle_model::ModelForCausalLM>);

candle_load!(
    Qwen3,
    candle_model::ModelForCausalLM,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' Qwen3Config default
        fix: Some(refuse_sliding_window),
        ..ConfigQuirks::default()
    }
);
