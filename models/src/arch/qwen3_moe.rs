//! Qwen3-MoE from safetensors (`Qwen3MoeForCausalLM`, `qwen3_moe`).
//!
//! Reference implementation: transformers' `modeling_qwen3_moe.py`. Built on zoo's
//! Llama decoder (`llama_decoder/`, as Qwen3 and Mixtral are): Qwen3's attention with
//! per-head q/k norms and NeoX halves, a softmax router over the top
//! `num_experts_per_tok` experts, matrices in their stored dtype, the batched forward.
//! The decoder renormalises the chosen experts' weights and puts experts in every
//! layer, so configs that say otherwise are refused: `norm_topk_prob: false`,
//! `mlp_only_layers` or a `decoder_sparse_step` other than 1 (released models: true, [],
//! 1). candle-transformers' `qwen3_moe` widens every weight to f32.

use zoo_core::registry::Registered;
use zoo_core::{Device, Error, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{LlamaDecoder, LlamaOptions};

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

/// Per-head q/k RMS norms; transformers' Qwen3MoeConfig rope default
/// (Llama's).
const OPTIONS: LlamaOptions = LlamaOptions {
    qk_norm: true,
    ..LlamaOptions::LLAMA
};

/// transformers' names of the router and the experts.
fn expert_names(name: &str) -> Option<String> {
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let mlp = format!("model.layers.{block}.mlp");
    if rest == "ffn_gate_inp.weight" {
        return Some(format!("{mlp}.gate.weight"));
    }
    let (stem, rest) = rest.split_once('.')?;
    let (expert, suffix) = rest.split_once('.')?;
    let proj = match stem {
        "ffn_gate" => "gate_proj",
        "ffn_up" => "up_proj",
        "ffn_down" => "down_proj",
        _ => return None,
    };
    expert.parse::<usize>().ok()?;
    Some(format!("{mlp}.experts.{expert}.{proj}.{suffix}"))
}

impl Qwen3Moe {
    fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let name = Self::ENTRY.name;
        let c = &src.config;
        let refused = [
            (
                "norm_topk_prob",
                c["norm_topk_prob"].as_bool() == Some(false),
            ),
            (
                "mlp_only_layers",
                c["mlp_only_layers"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty()),
            ),
            (
                "decoder_sparse_step",
                c["decoder_sparse_step"].as_u64().is_some_and(|s| s != 1),
            ),
        ];
        if let Some((key, _)) = refused.iter().find(|(_, bad)| *bad) {
            return Err(Error::Config {
                path: src.config_path.clone(),
                what: format!("`{name}` config"),
                detail: format!("`{key}: {}` is not supported", c[*key]),
                hint: "the decoder renormalises the chosen experts and has experts in every layer (released Qwen3-MoE: norm_topk_prob true, mlp_only_layers [], decoder_sparse_step 1)".into(),
            });
        }
        let info = src.model_info(name, Some(32_768), device)?;
        let decoder =
            LlamaDecoder::from_safetensors(src, &OPTIONS, name, Some(expert_names), device)?;
        Ok(Self(Decoded { decoder, info }))
    }
}
