//! StableLM (3B-4E1T, StableLM 2) from safetensors (`StableLmForCausalLM`, `stablelm`).
//!
//! Reference implementation: transformers' `modeling_stablelm.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`): LayerNorms with weight and bias, NeoX rotary on the first
//! `partial_rotary_factor` of each head (StableLmConfig documents 0.25), q/k/v biases
//! where `use_qkv_bias` puts them, attention and MLP in parallel where
//! `use_parallel_residual` says (StableLM 2 12B); matrices in their stored dtype, the
//! batched forward. `qk_layernorm` (per-head norms) is refused. candle-transformers'
//! `stable_lm` widens every weight to f32, has no cache reset, keeps no cache under
//! `use_cache: false`, and has neither `qk_layernorm` nor `use_parallel_residual`.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, NormKind};

/// StableLM (safetensors, weights in their stored dtype).
#[register_model(
    name = "stablelm",
    format = safetensors,
    hf_architectures = ["StableLmForCausalLM"],
    model_types = ["stablelm"],
    load = StableLm::load,
    batching = true,
)]
pub struct StableLm(Decoded<LlamaDecoder>);

/// LayerNorms, optional q/k/v biases; transformers' StableLmConfig defaults.
const OPTIONS: LlamaOptions = LlamaOptions {
    norm: NormKind::Layer,
    qkv_bias: true,
    config_defaults: &[("partial_rotary_factor", "0.25")],
    ..LlamaOptions::LLAMA
};

// StableLmConfig: context 4096 when config.json omits it.
llama_safetensors_load!(StableLm, OPTIONS, default_context = 4096);
