//! OLMo 2 from safetensors (`Olmo2ForCausalLM`, `olmo2`).
//!
//! Paper: "2 OLMo 2 Furious" (OLMo Team, 2024). Reference implementation: transformers'
//! `modeling_olmo2.py`. Built on zoo's Llama decoder (`llama_decoder/`): Llama's
//! computation with each branch's RMS norm on its output instead of its input, and q
//! and k normalised over the whole projection before the rotation; matrices in their
//! stored dtype, the batched forward. candle-transformers' `olmo2` computes the same but
//! widens every weight to f32 and has no batched forward.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, Norms, QkNorm};

/// OLMo 2 (safetensors, weights in their stored dtype).
#[register_model(
    name = "olmo2",
    format = safetensors,
    hf_architectures = ["Olmo2ForCausalLM"],
    model_types = ["olmo2"],
    load = Olmo2::load,
    batching = true,
)]
pub struct Olmo2(Decoded<LlamaDecoder>);

/// Post-norms, projection-wide q/k norms; transformers' Olmo2Config eps 1e-5.
const OPTIONS: LlamaOptions = LlamaOptions {
    norms: Norms::Post,
    qk_norm: QkNorm::Projection,
    config_defaults: &[("rms_norm_eps", "1e-5")],
    ..LlamaOptions::LLAMA
};

// Olmo2Config: context 2048 when config.json omits it.
llama_safetensors_load!(Olmo2, OPTIONS, default_context = 2048);
