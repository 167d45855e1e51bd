//! SmolLM3 from safetensors (`SmolLM3ForCausalLM`, `smollm3`).
//!
//! Reference implementation: transformers' `modeling_smollm3.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`): Llama's computation with NoPE layers (`no_rope_layers`,
//! else every `no_rope_layer_interval`-th layer rotates neither q nor k), matrices in
//! their stored dtype, the batched forward, SmolLM3's long-context YaRN as the decoder
//! computes it; `use_sliding_window: true` is refused (SmolLM3-3B does not use it).
//! candle-transformers' `smollm3` widens every weight to f32, ignores `rope_scaling`
//! and `head_dim`, and fails on an eos list.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// SmolLM3 (safetensors, weights in their stored dtype).
#[register_model(
    name = "smollm3",
    format = safetensors,
    hf_architectures = ["SmolLM3ForCausalLM"],
    model_types = ["smollm3"],
    load = SmolLM3::load,
    batching = true,
)]
pub struct SmolLM3(Decoded<LlamaDecoder>);

/// NoPE layers; transformers' SmolLM3Config rope base (`default_theta`).
const OPTIONS: LlamaOptions = LlamaOptions {
    nope_layers: true,
    default_rope_base: 2_000_000.0,
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(SmolLM3, OPTIONS, default_context = 32768);
