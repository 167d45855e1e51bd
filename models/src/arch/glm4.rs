//! GLM-4 (the GLM-4-0414 family) from safetensors (`Glm4ForCausalLM`, `glm4`).
//!
//! Reference implementation: transformers' `modeling_glm4.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`, as the GGUF form is): q/k/v biases, GPT-J rotary pairs on
//! the first `partial_rotary_factor` of each head, the four sandwich norms, the fused
//! `gate_up_proj`; matrices in their stored dtype, the batched forward.
//! candle-transformers' `glm4_new` widens every weight to f32, takes `hidden_size /
//! num_attention_heads` and a full rotation where config.json omits `head_dim` or
//! `partial_rotary_factor` (Glm4Config documents 128 and 0.5), and ignores
//! `rope_scaling`.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions, Norms, RopeLayout};

/// GLM-4 (safetensors, weights in their stored dtype).
#[register_model(
    name = "glm4",
    format = safetensors,
    hf_architectures = ["Glm4ForCausalLM"],
    model_types = ["glm4"],
    load = Glm4::load,
    batching = true,
)]
pub struct Glm4(Decoded<LlamaDecoder>);

/// GLM-4's layout; transformers' Glm4Config defaults.
const OPTIONS: LlamaOptions = LlamaOptions {
    hf_rope: RopeLayout::Interleaved,
    qkv_bias: true,
    norms: Norms::Sandwich,
    fused_gate_up: true,
    config_defaults: &[
        ("head_dim", "128"),
        ("partial_rotary_factor", "0.5"),
        ("rms_norm_eps", "1.5625e-7"),
    ],
    ..LlamaOptions::LLAMA
};

/// transformers' names of the sandwich norms and the fused MLP matrix.
fn names(name: &str) -> Option<String> {
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let stem = match rest {
        "post_attention_norm.weight" => "post_self_attn_layernorm.weight",
        "post_ffw_norm.weight" => "post_mlp_layernorm.weight",
        "ffn_up.weight" => "mlp.gate_up_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{stem}"))
}

llama_safetensors_load!(Glm4, OPTIONS, default_context = 131_072, names = names);
