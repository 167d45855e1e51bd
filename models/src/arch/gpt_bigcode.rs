//! GPT-BigCode from safetensors (`GPTBigCodeForCausalLM`, `gpt_bigcode`): StarCoder 1
//! and SantaCoder.
//!
//! Paper: "StarCoder: may the source be with you!" (Li et al., 2023). Reference
//! implementation: transformers' `modeling_gpt_bigcode.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`): GPT-2 blocks — LayerNorms with bias, learned absolute
//! positions instead of a rotation, biases on every projection, a tanh-GELU MLP — with
//! multi-query attention through one fused `c_attn`; the head is the token embedding;
//! matrices in their stored dtype, the batched forward. `scale_attn_weights: false` is
//! refused. candle-transformers' `bigcode` has a `Config` that does not deserialize,
//! splits a multi-head `c_attn` wrongly, no cache reset, and widens weights to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// GPT-BigCode: StarCoder 1, SantaCoder (safetensors, weights in their stored dtype).
#[register_model(
    name = "gpt-bigcode",
    format = safetensors,
    hf_architectures = ["GPTBigCodeForCausalLM"],
    model_types = ["gpt_bigcode"],
    load = GptBigcode::load,
    batching = true,
)]
pub struct GptBigcode(Decoded<LlamaDecoder>);

/// GPT-2's block with learned positions; the fused q/k/v of `c_attn`.
const OPTIONS: LlamaOptions = LlamaOptions {
    fused_qkv: true,
    learned_positions: true,
    ..LlamaOptions::GELU_BIASED
};

/// transformers' names (`transformer.h.{i}...`, GPT-2's).
fn names(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let top = match stem {
        "token_embd" => Some("wte"),
        "position_embd" => Some("wpe"),
        "output_norm" => Some("ln_f"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(format!("transformer.{t}.{suffix}"));
    }
    let (block, part) = stem.strip_prefix("blk.")?.split_once('.')?;
    let part = match part {
        "attn_norm" => "ln_1",
        "ffn_norm" => "ln_2",
        "attn_qkv" => "attn.c_attn",
        "attn_output" => "attn.c_proj",
        "ffn_up" => "mlp.c_fc",
        "ffn_down" => "mlp.c_proj",
        _ => return None,
    };
    Some(format!("transformer.h.{block}.{part}.{suffix}"))
}

// GPTBigCodeConfig: context 2048 (`n_positions`) when config.json omits it.
llama_safetensors_load!(GptBigcode, OPTIONS, default_context = 2048, names = names);
