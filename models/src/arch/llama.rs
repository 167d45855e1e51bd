//! Llama from safetensors: Llama 1/2/3, SmolLM and every checkpoint whose config.json
//! says `LlamaForCausalLM`.
//!
//! Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023).
//! Reference implementation: transformers' `modeling_llama.py`. Built on zoo's Llama
//! decoder (`llama_decoder`), as the GGUF form is: transformers' layout (q and k in
//! NeoX halves, which llama.cpp's converter permutes into pairs), matrices in their
//! stored dtype (bf16/f16 stay 2 bytes a value), llama3 RoPE scaling as llama.cpp's
//! `rope_freqs`, and the batched forward. Until 2026-11-30 this file wrapped
//! candle-transformers' `llama`, which widens every weight to f32 on the CPU, has no
//! batched forward and quietly used rope_theta 10000 when config.json (transformers
//! 5.x) keeps it in `rope_parameters`.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, RopeLayout};

/// Llama (safetensors, weights in their stored dtype).
#[register_model(
    name = "llama",
    format = safetensors,
    hf_architectures = ["LlamaForCausalLM"],
    model_types = ["llama"],
    load = Llama::load,
    batching = true,
)]
pub struct Llama(Decoded<LlamaDecoder>);

/// transformers' layout: NeoX halves. transformers' LlamaConfig: no biases, context
/// 2048 when config.json omits it.
const OPTIONS: LlamaOptions = LlamaOptions {
    rope: RopeLayout::Halves,
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(Llama, OPTIONS, default_context = 2048);
