//! Phi-2 (and Phi-1.5) from GGUF (`general.architecture = phi2`).
//!
//! Paper: "Textbooks Are All You Need II: phi-1.5 technical report" (Li et al., 2023).
//! Reference implementation: llama.cpp (`src/models/phi2.cpp`) and transformers'
//! `modeling_phi.py`. Built on zoo's Llama decoder (`llama_decoder/`): LayerNorm with
//! bias, attention and a GELU MLP in parallel from the same normed input, biases on
//! every projection and the output head, NeoX rotary on the first
//! `phi2.rope.dimension_count` features of each head, q/k/v fused or not as the file
//! has them. candle-transformers 0.11.1's `quantized_phi` has no `clear_kv_cache` (its
//! cache can only be replaced by reloading the model) and a fixed RoPE base.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions, RopeLayout};

/// Phi-2 / Phi-1.5 (GGUF, quantized weights).
#[register_model(
    name = "quantized-phi",
    format = gguf,
    gguf_architectures = ["phi2"],
    load = QuantizedPhi::load,
    batching = true,
)]
pub struct QuantizedPhi(Decoded<LlamaDecoder>);

/// Phi-2's layer with llama.cpp's NeoX rotary; PhiConfig's rope default is Llama's.
const OPTIONS: LlamaOptions = LlamaOptions {
    rope: RopeLayout::Halves,
    ..LlamaOptions::PARALLEL_GELU
};

llama_gguf_load!(QuantizedPhi, OPTIONS);
