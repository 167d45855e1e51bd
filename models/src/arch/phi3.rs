//! Phi-3 from safetensors (`Phi3ForCausalLM`).
//!
//! Paper: "Phi-3 Technical Report" (Abdin et al., 2024). Reference implementation:
//! transformers' `modeling_phi3.py`. Built on candle-transformers' `phi3`.
//!
//! candle's LongRoPE (Phi-3-128k, Phi-3.5) is not transformers': it multiplies the
//! frequencies by the factors where transformers divides by them, switches from the
//! short to the long factors by position instead of by sequence length, and leaves
//! out the attention factor. A config with `rope_scaling` is refused (the adapter's
//! default); Phi-3 4k checkpoints have none. candle's Phi-3 has no sliding window
//! either (Phi-3-mini-4k's is 2047): a sequence longer than the window is refused.

use candle_transformers::models::phi3 as candle_model;
use zoo_macros::register_model;

use crate::adapters::{candle_load, CandleLm, ConfigQuirks};

/// Phi-3 (safetensors, f32 on CPU).
#[register_model(
    name = "phi3",
    format = safetensors,
    hf_architectures = ["Phi3ForCausalLM"],
    model_types = ["phi3"],
    load = Phi3::load,
)]
pub struct Phi3(CandleLm<candle_model::Model>);

candle_load!(
    Phi3,
    candle_model::Model,
    ConfigQuirks {
        rope_theta: Some(10_000.0), // transformers' Phi3Config default
        refuse_past_sliding_window: true,
        ..ConfigQuirks::default()
    }
);
