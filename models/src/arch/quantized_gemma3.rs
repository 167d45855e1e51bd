//! Gemma 3 from GGUF (`general.architecture = gemma3`), text part.
//!
//! Paper: "Gemma 3 Technical Report" (Gemma Team, 2025). Reference implementation:
//! llama.cpp (`src/models/gemma3.cpp`) and transformers' `modeling_gemma3.py`.
//!
//! Built on zoo's Gemma decoder (`gemma_decoder/`), not on candle-transformers
//! 0.11.1's `quantized_gemma3`, which uses SiLU in the feed-forward where Gemma uses
//! GELU (the first logit of the real 270M model comes out 31.95 instead of llama.cpp's
//! 22.9; candle issue 3745, fix 3747 unmerged), has no `clear_kv_cache`, mis-masks the
//! sliding window and allocates ~2.3 GiB of rotary tables for the 270M model.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{gemma_gguf_load, GemmaDecoder};

/// Gemma 3 (GGUF, quantized weights), text only.
#[register_model(
    name = "quantized-gemma3",
    format = gguf,
    gguf_architectures = ["gemma3"],
    load = QuantizedGemma3::load,
    batching = true,
)]
pub struct QuantizedGemma3(Decoded<GemmaDecoder>);

// llama.cpp's Gemma 3: five local layers, then one global (`set_swa_pattern(6)`), and
// transformers' Gemma3TextConfig rope defaults where the GGUF omits them.
gemma_gguf_load!(QuantizedGemma3 {
    sliding_window_pattern: 6,
    rope_base: 1_000_000.0,
    rope_base_local: 10_000.0,
});
