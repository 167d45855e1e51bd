//! Qwen3-MoE from safetensors (`Qwen3MoeForCausalLM`, `qwen3_moe`).
//!
//! Reference implementation: transformers' `modeling_qwen3_moe.py`. Built on zoo's
//! Llama decoder (`llama_decoder/`, as Qwen3 and Mixtral are): Qwen3's attention with
//! per-head q/k norms, a softmax router over the top `num_experts_per_tok` experts
//! (renormalised under `norm_topk_prob`), dense layers where `mlp_only_layers` and
//! `decoder_sparse_step` say, matrices in their stored dtype, the batched forward.
//! candle-transformers' `qwen3_moe` widens every weight to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, QkNorm};

/// Qwen3-MoE (safetensors, weights in their stored dtype).
#[register_model(
    name = "qwen3-moe",
    format = safetensors,
    hf_architectures = ["Qwen3MoeForCausalLM"],
    model_types = ["qwen3_moe"],
    load = Qwen3Moe::load,
    batching = true,
)]
pub struct Qwen3Moe(Decoded<LlamaDecoder>);

/// Per-head q/k RMS norms; transformers' Qwen3MoeConfig defaults (rope base Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    qk_norm: QkNorm::Heads,
    config_defaults: &[("norm_topk_prob", "false")],
    ..LlamaOptions::LLAMA
};

llama_safetensors_load!(Qwen3Moe, OPTIONS, default_context = 32768);
