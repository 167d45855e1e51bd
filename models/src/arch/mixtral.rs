//! Mixtral (sparse mixture of experts) from safetensors (`MixtralForCausalLM`).
//!
//! Paper: "Mixtral of Experts" (Jiang et al., 2024). Reference implementation:
//! transformers' `modeling_mixtral.py`. Built on zoo's Llama decoder (`llama_decoder/`),
//! as the GGUF form is: the router's softmax, the top `num_experts_per_tok` experts
//! renormalised, NeoX halves, matrices in their stored dtype, the batched forward. A
//! sliding window (Mixtral's released models have none) cuts the context. Until
//! 2026-11-30 this file wrapped candle-transformers' `mixtral`, whose config does not
//! deserialize from a plain config.json and which has no `clear_kv_cache`.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Mixtral (safetensors, weights in their stored dtype).
#[register_model(
    name = "mixtral",
    format = safetensors,
    hf_architectures = ["MixtralForCausalLM"],
    model_types = ["mixtral"],
    load = Mixtral::load,
    batching = true,
)]
pub struct Mixtral(Decoded<LlamaDecoder>);

/// transformers' MixtralConfig rope base and context (4096 x 32).
const OPTIONS: LlamaOptions = LlamaOptions {
    default_rope_base: 1_000_000.0,
    ..LlamaOptions::LLAMA
};

/// transformers' names of the router and the experts (`w1` gate, `w3` up, `w2` down).
fn expert_names(name: &str) -> Option<String> {
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let moe = format!("model.layers.{block}.block_sparse_moe");
    if rest == "ffn_gate_inp.weight" {
        return Some(format!("{moe}.gate.weight"));
    }
    let (stem, rest) = rest.split_once('.')?;
    let (expert, suffix) = rest.split_once('.')?;
    let w = match stem {
        "ffn_gate" => "w1",
        "ffn_up" => "w3",
        "ffn_down" => "w2",
        _ => return None,
    };
    expert.parse::<usize>().ok()?;
    Some(format!("{moe}.experts.{expert}.{w}.{suffix}"))
}

llama_safetensors_load!(
    Mixtral,
    OPTIONS,
    default_context = 131_072,
    window_limits_context,
    names = expert_names
);
