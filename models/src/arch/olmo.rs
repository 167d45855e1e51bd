//! OLMo (1) from safetensors (`OlmoForCausalLM`, `olmo`).
//!
//! Paper: "OLMo: Accelerating the Science of Language Models" (Groeneveld et al.,
//! 2024). Reference implementation: transformers' `modeling_olmo.py`. Built on zoo's
//! Llama decoder (`llama_decoder/`): Llama's computation with LayerNorms that have no
//! weight or bias (eps 1e-5) and q, k and v clamped to `clip_qkv` where the config sets
//! it; matrices in their stored dtype, the batched forward. candle-transformers' `olmo`
//! computes the same but widens every weight to f32 and has no batched forward.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, NormKind};

/// OLMo (safetensors, weights in their stored dtype).
#[register_model(
    name = "olmo",
    format = safetensors,
    hf_architectures = ["OlmoForCausalLM"],
    model_types = ["olmo"],
    load = Olmo::load,
    batching = true,
)]
pub struct Olmo(Decoded<LlamaDecoder>);

/// Weightless LayerNorms with transformers' OlmoLayerNorm eps.
const OPTIONS: LlamaOptions = LlamaOptions {
    norm: NormKind::PlainLayer,
    config_defaults: &[("rms_norm_eps", "1e-5")],
    ..LlamaOptions::LLAMA
};

// OlmoConfig: context 2048 when config.json omits it.
llama_safetensors_load!(Olmo, OPTIONS, default_context = 2048);
