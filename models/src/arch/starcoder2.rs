//! Starcoder2 from safetensors (`Starcoder2ForCausalLM`, `starcoder2`).
//!
//! Reference implementation: transformers. Built on candle-transformers' `starcoder2`.
//!
//! As candle's Mistral, candle's Starcoder2 applies the sliding window only inside one
//! forward call, with one key too many (`i - j <= w`), and not at all over the KV
//! cache: `w - 1` fixes the first, and a sequence longer than the window (4096 in the
//! released models) is refused with an error instead of computed wrongly.

use candle_transformers::models::starcoder2 as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, window_one_key_narrower, CandleLm, ConfigQuirks};

/// Starcoder2 (safetensors, f32 on CPU).
#[register_model(
    name = "starcoder2",
    format = safetensors,
    hf_architectures = ["Starcoder2ForCausalLM"],
    model_types = ["starcoder2"],
    load = Starcoder2::load,
)]
pub struct Starcoder2(CandleLm<candle_model::Model>);

candle_load!(
    Starcoder2,
    candle_model::Model,
    ConfigQuirks {
        refuse_past_sliding_window: true,
        fix: Some(window_one_key_narrower),
        ..ConfigQuirks::default()
    }
);
