//! Qwen1.5-MoE / Qwen2-MoE from safetensors (`Qwen2MoeForCausalLM`, `qwen2_moe`).
//!
//! Reference implementation: transformers' `modeling_qwen2_moe.py`. Built on zoo's
//! Llama decoder (`llama_decoder/`, as Qwen2 and Qwen3-MoE are): Qwen2's attention with
//! q/k/v biases, a softmax router over the top `num_experts_per_tok` experts
//! (renormalised under `norm_topk_prob`) plus a shared expert gated by a sigmoid, dense
//! layers where `mlp_only_layers` and `decoder_sparse_step` say, matrices in their stored
//! dtype, the batched forward. candle-transformers' `qwen2_moe` widens every weight to
//! f32, applies `sliding_window` to every layer (transformers writes 0 when it is off),
//! and ignores `mlp_only_layers`, `rope_scaling`, `head_dim` and tied embeddings.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Qwen2-MoE (safetensors, weights in their stored dtype).
#[register_model(
    name = "qwen2-moe",
    format = safetensors,
    hf_architectures = ["Qwen2MoeForCausalLM"],
    model_types = ["qwen2_moe"],
    load = Qwen2Moe::load,
    batching = true,
)]
pub struct Qwen2Moe(Decoded<LlamaDecoder>);

/// q/k/v biases, the shared expert; transformers' Qwen2MoeConfig defaults (rope base
/// Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    qkv_bias: true,
    shared_expert: true,
    config_defaults: &[("norm_topk_prob", "false")],
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(Qwen2Moe, OPTIONS, default_context = 32768);
