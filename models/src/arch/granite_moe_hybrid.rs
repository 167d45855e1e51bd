//! Granite 4.0 hybrid from safetensors (`GraniteMoeHybridForCausalLM`,
//! `granitemoehybrid`), in its dense attention-only form (granite-4.0-micro): Granite's
//! four multipliers (embedding, attention, residual, logits) on a Llama-like decoder with
//! a gated shared MLP (`shared_mlp.input_linear`: gate then up rows).
//!
//! Reference implementation: transformers' `modeling_granitemoehybrid.py`. Built on
//! zoo's Llama decoder (`llama_decoder/`, as `granite.rs`): matrices in their stored
//! dtype, the batched forward. Not on candle-transformers 0.11.1's `granitemoehybrid`,
//! which widens every weight to f32 and runs one sequence at a time.
//!
//! Refused with an error, as not computed here: Mamba layers (`mamba` / transformers 5's
//! `linear_attention`), and a config without layer kinds, which transformers reads as
//! all Mamba; `num_local_experts > 0` (the MoE block); `position_embedding_type` other
//! than `rope` (transformers' default is none, NoPE). transformers 5 writes the layer
//! kinds as `layer_types`, 4.x as `layers_block_type`; both are read.

use zoo_core::registry::Registered;
use zoo_core::{Device, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{unsupported, Decoded};
use crate::llama_decoder::{LlamaDecoder, LlamaOptions};

/// Granite 4.0 hybrid, attention-only dense form (safetensors, weights in their stored
/// dtype).
#[register_model(
    name = "granite-moe-hybrid",
    format = safetensors,
    hf_architectures = ["GraniteMoeHybridForCausalLM"],
    model_types = ["granitemoehybrid"],
    load = GraniteMoeHybrid::load,
    batching = true,
)]
pub struct GraniteMoeHybrid(Decoded<LlamaDecoder>);

/// The multipliers and the fused shared MLP; transformers' GraniteMoeHybridConfig rope
/// default (its default rope parameters) is Llama's.
const OPTIONS: LlamaOptions = LlamaOptions {
    multipliers: true,
    fused_gate_up: true,
    ..LlamaOptions::LLAMA
};

/// transformers' names where the shared MLP's differ from Llama's.
fn names(name: &str) -> Option<String> {
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let (stem, suffix) = rest.split_once('.')?;
    let stem = match stem {
        "ffn_up" => "shared_mlp.input_linear",
        "ffn_down" => "shared_mlp.output_linear",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{stem}.{suffix}"))
}

impl GraniteMoeHybrid {
    /// Loads config.json and the safetensors weights (memory-mapped), after refusing
    /// what the file's comment lists.
    fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let name = Self::ENTRY.name;
        let refuse = |detail: String, hint: &str| unsupported(src, name, detail, hint);
        let config = &src.config;
        let attention_only = "zoo runs the attention-only Granite 4.0 models (granite-4.0-micro)";
        let kinds = [&config["layer_types"], &config["layers_block_type"]]
            .into_iter()
            .find_map(|v| v.as_array())
            .ok_or_else(|| {
                refuse(
                    "no `layer_types`: transformers makes every layer a Mamba layer".into(),
                    attention_only,
                )
            })?;
        if let Some(kind) = kinds
            .iter()
            .find(|k| !matches!(k.as_str(), Some("attention" | "full_attention")))
        {
            return Err(refuse(
                format!("layer kind {kind} is not supported"),
                attention_only,
            ));
        }
        if config["num_local_experts"].as_u64().unwrap_or(0) != 0 {
            return Err(refuse(
                format!(
                    "`num_local_experts: {}` is not supported",
                    config["num_local_experts"]
                ),
                "only the dense models (0 experts) load",
            ));
        }
        if config["position_embedding_type"].as_str() != Some("rope") {
            return Err(refuse(
                format!(
                    "`position_embedding_type: {}` is not supported",
                    config["position_embedding_type"]
                ),
                "only `rope` models load",
            ));
        }
        let info = src.model_info(name, None, device)?;
        let decoder = LlamaDecoder::from_safetensors(src, &OPTIONS, name, Some(names), device)?;
        Ok(Self(Decoded { decoder, info }))
    }
}
