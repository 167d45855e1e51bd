//! Gemma 2 from safetensors (`Gemma2ForCausalLM`).
//!
//! Paper: "Gemma 2: Improving Open Language Models at a Practical Size" (2024). Reference implementation: transformers' `modeling_gemma2.py`. Built on
//! candle-transformers' `gemma2`.
//!
//! candle's Gemma 2 does not mask its local layers' sliding window at all. Within the
//! window local and global attention agree, so a sequence longer than the window
//! (4096 in the released models) is refused with an error instead of computed wrongly.

use candle_transformers::models::gemma2 as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Gemma 2 (safetensors, f32 on CPU).
#[register_model(
    name = "gemma2",
    format = safetensors,
    hf_architectures = ["Gemma2ForCausalLM"],
    model_types = ["gemma2"],
    load = Gemma2::load,
)]
pub struct Gemma2(CandleLm<candle_model::Model>);

candle_load!(
    Gemma2,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' Gemma2Config default
        context_length: Some(8192),
        refuse_past_sliding_window: true,
        ..ConfigQuirks::default()
    },
    new = |c, vb| candle_model::Model::new(false, c, vb)
);
