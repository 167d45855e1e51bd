//! LFM2 from safetensors (`Lfm2ForCausalLM`, `lfm2`): Liquid's hybrid of gated short
//! convolutions and grouped-query attention with per-head q/k norms.
//!
//! Reference implementation: transformers' `modeling_lfm2.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`, its short convolution and config.json's `layer_types`,
//! `full_attn_idxs`, `conv_L_cache` and `conv_bias` in `conv.rs`), as the GGUF form is:
//! matrices in their stored dtype, the batched forward. The MLP's width is the
//! checkpoint's (transformers' `block_auto_adjust_ff_dim` rule only sizes it). Not on
//! candle-transformers 0.11.1's `lfm2`, which sizes the MLP by its own rule (LFM2-350M:
//! 4096 against the checkpoint's 4608), ignores its convolution state for a chunk after
//! the first, and widens every weight to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, QkNorm};

/// LFM2 (safetensors, weights in their stored dtype).
#[register_model(
    name = "lfm2",
    format = safetensors,
    hf_architectures = ["Lfm2ForCausalLM"],
    model_types = ["lfm2"],
    load = Lfm2::load,
    batching = true,
)]
pub struct Lfm2(Decoded<LlamaDecoder>);

/// Convolution layers, per-head q/k RMS norms, the final norm after the last layer;
/// transformers' Lfm2Config rope default.
const OPTIONS: LlamaOptions = LlamaOptions {
    qk_norm: QkNorm::Heads,
    short_conv: true,
    output_norm: "token_embd_norm",
    default_rope_base: 1_000_000.0,
    ..LlamaOptions::LLAMA
};

/// transformers' names where LFM2's differ from Llama's.
fn names(name: &str) -> Option<String> {
    if let Some(suffix) = name.strip_prefix("token_embd_norm.") {
        return Some(format!("model.embedding_norm.{suffix}"));
    }
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    let stem = match stem {
        "attn_norm" => "operator_norm",
        "ffn_norm" => "ffn_norm",
        "attn_output" => "self_attn.out_proj",
        "attn_q_norm" => "self_attn.q_layernorm",
        "attn_k_norm" => "self_attn.k_layernorm",
        "ffn_gate" => "feed_forward.w1",
        "ffn_up" => "feed_forward.w3",
        "ffn_down" => "feed_forward.w2",
        "shortconv.in_proj" => "conv.in_proj",
        "shortconv.conv" => "conv.conv",
        "shortconv.out_proj" => "conv.out_proj",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{stem}.{suffix}"))
}

// Lfm2Config: context 128,000 when config.json omits it.
llama_safetensors_load!(Lfm2, OPTIONS, default_context = 128_000, names = names);
