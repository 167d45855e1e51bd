//! Mixtral (sparse mixture of experts) from safetensors (`MixtralForCausalLM`).
//!
//! Paper: "Mixtral of Experts" (Jiang et al., 2024). Reference implementation: transformers' `modeling_mixtral.py`. Built on
//! candle-transformers' `mixtral`.
//!
//! candle's Mixtral config does not deserialize from a plain config.json: it wants
//! `use_flash_attn`, and `sliding_window` as a number where transformers writes `null`
//! (patched here: off, and with a window the load fails clearly, as candle applies it
//! only inside one forward call). It has no `clear_kv_cache`: a reset rebuilds the
//! model from the memory-mapped weights.

use candle_transformers::models::mixtral as candle_model;
use serde_json::json;
use zoo_macros::register_model;

use crate::adapters::{candle_load, unsupported, CandleLm, ConfigQuirks};

/// Mixtral (safetensors, f32 on CPU).
#[register_model(
    name = "mixtral",
    format = safetensors,
    hf_architectures = ["MixtralForCausalLM"],
    model_types = ["mixtral"],
    load = Mixtral::load,
)]
pub struct Mixtral(CandleLm<candle_model::Model>);

candle_load!(
    Mixtral,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(1_000_000.0), // transformers' MixtralConfig default
        fix: Some(|src, config| {
            // See the file's comment: no window, no flash attention.
            if !config["sliding_window"].is_null() {
                return Err(unsupported(
            src,
            "mixtral",
            format!("sliding_window {} is not supported", config["sliding_window"]),
            "Mixtral 8x7B and 8x22B have no window (null); set it to null if the model was trained without",
        ));
            }
            config["sliding_window"] = json!(zoo_core::source::MAX_CONTEXT);
            config["use_flash_attn"] = json!(false);
            Ok(())
        }),
        ..ConfigQuirks::default()
    },
    reset = rebuild
);
