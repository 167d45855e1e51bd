//! Mistral from safetensors (`MistralForCausalLM`).
//!
//! Paper: "Mistral 7B" (Jiang et al., 2023). Reference implementation: transformers'
//! `modeling_mistral.py`. Built on zoo's Llama decoder (`llama_decoder/`), as the GGUF
//! form is (llama.cpp converts Mistral as `llama`): NeoX halves, matrices in their
//! stored dtype, the batched forward. The decoder masks no sliding window: Mistral 7B
//! v0.1's (4096) cuts the context, so a longer sequence is refused rather than computed
//! without it (later versions have no window). candle-transformers' `mistral` admits
//! one key too many into its window and applies it only inside one forward call.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Mistral (safetensors, weights in their stored dtype).
#[register_model(
    name = "mistral",
    format = safetensors,
    hf_architectures = ["MistralForCausalLM"],
    model_types = ["mistral"],
    load = Mistral::load,
    batching = true,
)]
pub struct Mistral(Decoded<LlamaDecoder>);

// MistralConfig: Llama's rope default, context 4096 x 32 when config.json omits it.
llama_safetensors_load!(
    Mistral,
    LlamaOptions::LLAMA,
    default_context = 131_072,
    window_limits_context
);
