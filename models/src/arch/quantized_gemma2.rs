//! Gemma 2 from GGUF (`general.architecture = gemma2`).
//!
//! Paper: "Gemma 2: Improving Open Language Models at a Practical Size" (2024).
//! Reference implementation: llama.cpp (`src/models/gemma2.cpp`). Built on zoo's Gemma
//! decoder (`gemma_decoder/`), with Gemma 2's post-norms, attention and final logit
//! soft-capping and sliding-window local layers; candle-transformers 0.11.1 has no
//! quantized Gemma 2.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{gemma_gguf_load, GemmaDecoder};

/// Gemma 2 (GGUF, quantized weights).
#[register_model(
    name = "quantized-gemma2",
    format = gguf,
    gguf_architectures = ["gemma2"],
    load = QuantizedGemma2::load,
    batching = true,
)]
pub struct QuantizedGemma2(Decoded<GemmaDecoder>);

// llama.cpp's Gemma 2: local and global layers alternate, local first
// (`set_swa_pattern(2)`); transformers' Gemma2Config rope default.
gemma_gguf_load!(QuantizedGemma2 {
    sliding_window_pattern: 2,
    rope_base: 10_000.0,
    rope_base_local: 10_000.0,
});
