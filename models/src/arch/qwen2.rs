//! Qwen2 / Qwen2.5 from safetensors (`Qwen2ForCausalLM`).
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation: transformers' `modeling_qwen2.py`. Built on
//! candle-transformers' `qwen2`.
//!
//! candle's config wants `sliding_window` as a number and applies it to every layer;
//! transformers writes `null` or ignores it unless `use_sliding_window`. Released
//! Qwen2/2.5 models do not use it, so with `use_sliding_window: false` the window is
//! opened to the whole context, and with `true` the load fails clearly (candle's mask
//! admits one key too many and nothing masks during decode).

use candle_transformers::models::qwen2 as candle_model;
use serde_json::json;
use zoo_macros::register_model;

use crate::adapters::{candle_load, refuse_sliding_window, CandleLm, ConfigQuirks};

/// Qwen2 / Qwen2.5 (safetensors, f32 on CPU).
#[register_model(
    name = "qwen2",
    format = safetensors,
    hf_architectures = ["Qwen2ForCausalLM"],
    model_types = ["qwen2"],
    load = Qwen2::load,
)]
pub struct Qwen2(CandleLm<candle_model::ModelForCausalLM>);

candle_load!(
    Qwen2,
    candle_model::ModelForCausalLM,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' Qwen2Config default
        fix: Some(|src, config| {
            // See the file's comment: the window opened to the whole context, or an error.
            refuse_sliding_window(src, config)?;
            config["sliding_window"] = json!(zoo_core::source::MAX_CONTEXT);
            Ok(())
        }),
        ..ConfigQuirks::default()
    }
);
