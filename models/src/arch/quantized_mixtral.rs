//! Mixtral from GGUF: llama.cpp writes it as `general.architecture = llama` with
//! `llama.expert_count` experts per layer, which is how this entry claims such a file
//! (the registry asks each entry that shares the `llama` string; see `detect`).
//!
//! Paper: "Mixtral of Experts" (Jiang et al., 2024). Reference implementation:
//! llama.cpp (`src/models/llama.cpp`, MoE branch) and transformers'
//! `modeling_mixtral.py`. Built on zoo's Llama decoder (`llama_decoder/`): candle's
//! `quantized_llama` reads only the old per-expert tensors (`blk.N.ffn_gate.E.weight`)
//! while current llama.cpp stacks the experts (`blk.N.ffn_gate_exps.weight`); both load.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::detect::has_experts;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions};

/// Mixtral (GGUF, quantized weights, sparse mixture of experts).
#[register_model(
    name = "quantized-mixtral",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedMixtral::load,
    batching = true,
    detect = has_experts,
)]
pub struct QuantizedMixtral(Decoded<LlamaDecoder>);

/// As Llama, with the experts the file declares; transformers' MixtralConfig rope default.
const OPTIONS: LlamaOptions = LlamaOptions {
    default_rope_base: 1_000_000.0,
    ..LlamaOptions::LLAMA
};

llama_gguf_load!(QuantizedMixtral, OPTIONS);
