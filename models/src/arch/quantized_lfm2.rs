//! LFM2 from GGUF (`general.architecture = lfm2`): Liquid's hybrid of gated short
//! convolutions and grouped-query attention with per-head q/k norms (layers whose
//! `attention.head_count_kv` entry is 0 are convolutions).
//!
//! Reference implementation: llama.cpp (`src/models/lfm2.cpp`) and transformers'
//! `modeling_lfm2.py`. Built on zoo's Llama decoder (`llama_decoder/`, its short
//! convolution in `conv.rs`), not on candle-transformers 0.11.1's `quantized_lfm2`,
//! whose convolution ignores its cached state when more than one token arrives after
//! the first call, which has no way to clear its caches, and which runs one sequence
//! at a time. The final norm is llama.cpp's `token_embd_norm` (transformers'
//! `embedding_norm`, applied after the last layer); NeoX rotary halves.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions, QkNorm, RopeLayout};

/// LFM2 (GGUF, quantized weights).
#[register_model(
    name = "quantized-lfm2",
    format = gguf,
    gguf_architectures = ["lfm2"],
    load = QuantizedLfm2::load,
    batching = true,
)]
pub struct QuantizedLfm2(Decoded<LlamaDecoder>);

/// Convolution layers, per-head q/k RMS norms, NeoX halves, the final norm's name;
/// transformers' Lfm2Config rope default.
const OPTIONS: LlamaOptions = LlamaOptions {
    rope: RopeLayout::Halves,
    qk_norm: QkNorm::Heads,
    short_conv: true,
    output_norm: "token_embd_norm",
    default_rope_base: 1_000_000.0,
    ..LlamaOptions::LLAMA
};

llama_gguf_load!(QuantizedLfm2, OPTIONS);
