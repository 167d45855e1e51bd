//! Qwen2 / Qwen2.5 from safetensors (`Qwen2ForCausalLM`).
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation:
//! transformers' `modeling_qwen2.py`. Built on zoo's Llama decoder (`llama_decoder`),
//! as the GGUF form is: biases on q, k and v, NeoX halves, matrices in their stored
//! dtype, the batched forward. `use_sliding_window: true` is refused (released
//! Qwen2/2.5 models do not use it). candle-transformers' `qwen2` widens every weight
//! to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Qwen2 / Qwen2.5 (safetensors, weights in their stored dtype).
#[register_model(
    name = "qwen2",
    format = safetensors,
    hf_architectures = ["Qwen2ForCausalLM"],
    model_types = ["qwen2"],
    load = Qwen2::load,
    batching = true,
)]
pub struct Qwen2(Decoded<LlamaDecoder>);

/// Biases on q, k and v; transformers' Qwen2Config context 32768 when
/// config.json omits it (its rope default is Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    qkv_bias: true,
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(Qwen2, OPTIONS, default_context = 32768);
