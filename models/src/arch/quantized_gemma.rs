//! Gemma (1) from GGUF (`general.architecture = gemma`).
//!
//! Paper: "Gemma: Open Models Based on Gemini Research and Technology" (2024).
//! Reference implementation: llama.cpp (`src/models/gemma.cpp`). Built on zoo's Gemma
//! decoder (`gemma_decoder/`): candle-transformers 0.11.1 has no quantized Gemma 1
//! (its `quantized_gemma3` wants the Gemma 3 norms).

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{gemma_gguf_load, GemmaDecoder};

/// Gemma (GGUF, quantized weights).
#[register_model(
    name = "quantized-gemma",
    format = gguf,
    gguf_architectures = ["gemma"],
    load = QuantizedGemma::load,
    batching = true,
)]
pub struct QuantizedGemma(Decoded<GemmaDecoder>);

// Gemma 1 has no local layers; transformers' GemmaConfig rope default.
gemma_gguf_load!(QuantizedGemma {
    sliding_window_pattern: 1,
    rope_base: 10_000.0,
    rope_base_local: 10_000.0,
});
