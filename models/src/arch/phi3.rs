//! Phi-3 from safetensors (`Phi3ForCausalLM`).
//!
//! Paper: "Phi-3 Technical Report" (Abdin et al., 2024). Reference implementation:
//! transformers' `modeling_phi3.py`. Built on zoo's Llama decoder (`llama_decoder/`, as
//! the GGUF form is): q/k/v in one matrix and gate/up in another, split at load; matrices
//! in their stored dtype, the batched forward. The decoder masks no sliding window
//! (Phi-3-mini-4k's is 2047): the context stops at the window. LongRoPE (Phi-3-128k,
//! Phi-3.5) as llama.cpp runs it at the trained context: the long factors throughout
//! when `max_position_embeddings` passes the original context (transformers switches
//! per forward by the sequence's length, so a sequence within the original context
//! differs from transformers'), cos and sin times the attention factor. A partial
//! rotary factor is refused. candle-transformers' `phi3` widens every weight to f32 and
//! computes LongRoPE unlike transformers (multiplying by the factors where transformers
//! divides, switching by position, no attention factor).

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Phi-3 (safetensors, weights in their stored dtype).
#[register_model(
    name = "phi3",
    format = safetensors,
    hf_architectures = ["Phi3ForCausalLM"],
    model_types = ["phi3"],
    load = Phi3::load,
    batching = true,
)]
pub struct Phi3(Decoded<LlamaDecoder>);

/// Fused matrices; transformers' Phi3Config eps 1e-5 (its rope default is Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    fused_qkv: true,
    fused_gate_up: true,
    config_defaults: &[("rms_norm_eps", "1e-5")],
    ..LlamaOptions::LLAMA
};

/// transformers' names of the fused matrices.
fn fused_names(name: &str) -> Option<String> {
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let stem = match rest {
        "attn_qkv.weight" => "self_attn.qkv_proj.weight",
        "ffn_up.weight" => "mlp.gate_up_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{stem}"))
}

llama_safetensors_load!(
    Phi3,
    OPTIONS,
    default_context = 4096,
    window_limits_context,
    names = fused_names
);
