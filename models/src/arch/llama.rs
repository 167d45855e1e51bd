//! Llama from safetensors: Llama 1/2/3, SmolLM and every checkpoint whose config.json
//! says `LlamaForCausalLM`.
//!
//! Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023).
//! Reference implementation: transformers' `modeling_llama.py`. Built on zoo's Llama
//! decoder (`llama_decoder`), as the GGUF form is: transformers' layout (q and k in
//! NeoX halves, which llama.cpp's converter permutes into pairs), matrices in their
//! stored dtype (bf16/f16 stay 2 bytes a value), llama3 RoPE scaling as llama.cpp's
//! `rope_freqs`, and the batched forward. candle-transformers' `llama` widens every
//! weight to f32, has no batched forward and quietly uses rope_theta 10000 when
//! config.json (transformers 5.x) keeps it in `rope_parameters`.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

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

// transformers' LlamaConfig: context 2048 when config.json omits it.
llama_safetensors_load!(Llama, LlamaOptions::LLAMA, default_context = 2048);
