//! Qwen3 from safetensors (`Qwen3ForCausalLM`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation:
//! transformers' `modeling_qwen3.py`. Built on zoo's Llama decoder (`llama_decoder/`),
//! as the GGUF form is: per-head q/k RMS norms, NeoX halves, matrices in their stored
//! dtype, the batched forward. `use_sliding_window: true` is refused (released Qwen3
//! models do not use it). candle-transformers' `qwen3` widens every weight to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, QkNorm};

/// Qwen3 (safetensors, weights in their stored dtype).
#[register_model(
    name = "qwen3",
    format = safetensors,
    hf_architectures = ["Qwen3ForCausalLM"],
    model_types = ["qwen3"],
    load = Qwen3::load,
    batching = true,
)]
pub struct Qwen3(Decoded<LlamaDecoder>);

/// Per-head q/k RMS norms; transformers' Qwen3Config context 32768 when
/// config.json omits it (its rope default is Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    qk_norm: QkNorm::Heads,
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(Qwen3, OPTIONS, default_context = 32768);
