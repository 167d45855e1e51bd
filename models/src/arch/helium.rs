//! Helium from safetensors (`HeliumForCausalLM`, `helium`).
//!
//! Reference implementation: transformers' `modeling_helium.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`): Llama's computation with q and k rotated in GPT-J pairs
//! (Helium's `rotate_half` interleaves), matrices in their stored dtype, the batched
//! forward. candle-transformers' `helium` computes the same but widens every weight to
//! f32 and has no batched forward.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, RopeLayout};

/// Helium (safetensors, weights in their stored dtype).
#[register_model(
    name = "helium",
    format = safetensors,
    hf_architectures = ["HeliumForCausalLM"],
    model_types = ["helium"],
    load = Helium::load,
    batching = true,
)]
pub struct Helium(Decoded<LlamaDecoder>);

/// GPT-J pairs; transformers' HeliumConfig defaults: rope base 100000, head size 128,
/// eps 1e-8, context 4096.
const OPTIONS: LlamaOptions = LlamaOptions {
    hf_rope: RopeLayout::Interleaved,
    default_rope_base: 100_000.0,
    config_defaults: &[("head_dim", "128"), ("rms_norm_eps", "1e-8")],
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(Helium, OPTIONS, default_context = 4096);
