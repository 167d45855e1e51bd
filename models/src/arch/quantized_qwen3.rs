//! Qwen3 from GGUF (`general.architecture = qwen3`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation:
//! llama.cpp (`src/models/qwen3.cpp`): Llama-like with per-head q/k RMS norms and NeoX
//! rotary halves. Built on zoo's Llama decoder (`llama_decoder/`), not on
//! candle-transformers 0.11.1's `quantized_qwen3`, which takes its rotary tables' dtype
//! from a `general.dtype` key llama.cpp does not write and otherwise builds them in
//! f16 (logits off by ~1e-3 on the conformance fixture; positions above 2048 not even
//! representable), and expands the embedding to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions, QkNorm, RopeLayout};

/// Qwen3 (GGUF, quantized weights).
#[register_model(
    name = "quantized-qwen3",
    format = gguf,
    gguf_architectures = ["qwen3"],
    load = QuantizedQwen3::load,
    batching = true,
)]
pub struct QuantizedQwen3(Decoded<LlamaDecoder>);

/// Per-head q/k RMS norms; NeoX rotary halves (transformers' Qwen3Config rope default is Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    rope: RopeLayout::Halves,
    qk_norm: QkNorm::Heads,
    ..LlamaOptions::LLAMA
};

llama_gguf_load!(QuantizedQwen3, OPTIONS);
