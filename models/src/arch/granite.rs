//! Granite 3.x from safetensors (`GraniteForCausalLM`, `granite`).
//!
//! Reference implementation: transformers' `modeling_granite.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`): Llama's computation with Granite's four multipliers (the
//! embedding times `embedding_multiplier`, q.k times `attention_multiplier` in place of
//! `1/sqrt(head_dim)`, each residual branch times `residual_multiplier`, the logits
//! divided by `logits_scaling`), matrices in their stored dtype, the batched forward.
//! candle-transformers' `granite` ignores all four (wrong for every released Granite
//! 3.x model), widens every weight to f32 and panics on a missing tensor.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Granite (safetensors, weights in their stored dtype).
#[register_model(
    name = "granite",
    format = safetensors,
    hf_architectures = ["GraniteForCausalLM"],
    model_types = ["granite"],
    load = Granite::load,
    batching = true,
)]
pub struct Granite(Decoded<LlamaDecoder>);

/// The multipliers; transformers' GraniteConfig rope default is Llama's.
const OPTIONS: LlamaOptions = LlamaOptions {
    multipliers: true,
    ..LlamaOptions::LLAMA
};

// GraniteConfig: context 2048 when config.json omits it.
llama_safetensors_load!(Granite, OPTIONS, default_context = 2048);
