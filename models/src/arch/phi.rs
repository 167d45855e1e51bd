//! Phi-1.5 / Phi-2 from safetensors (`PhiForCausalLM`).
//!
//! Paper: "Textbooks Are All You Need II: phi-1.5 technical report" (Li et al., 2023).
//! Reference implementation: transformers' `modeling_phi.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`, as the GGUF form is): LayerNorm with bias, attention and a
//! GELU MLP in parallel, biases on every projection and `lm_head`, NeoX rotary on the
//! first `partial_rotary_factor` of each head; matrices in their stored dtype, the
//! batched forward. `qk_layernorm` is refused. candle-transformers' `phi` takes no
//! position (it reads it from its own cache) and widens every weight to f32.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Phi-1.5 / Phi-2 (safetensors, weights in their stored dtype).
#[register_model(
    name = "phi",
    format = safetensors,
    hf_architectures = ["PhiForCausalLM"],
    model_types = ["phi"],
    load = Phi::load,
    batching = true,
)]
pub struct Phi(Decoded<LlamaDecoder>);

/// Phi's layer; transformers' PhiConfig rotary share.
const OPTIONS: LlamaOptions = LlamaOptions {
    config_defaults: &[("partial_rotary_factor", "0.5")],
    ..LlamaOptions::PARALLEL_GELU
};

/// transformers' names where Phi's differ from Llama's.
fn names(name: &str) -> Option<String> {
    if let Some(suffix) = name.strip_prefix("output_norm.") {
        return Some(format!("model.final_layernorm.{suffix}"));
    }
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let (stem, suffix) = rest.split_once('.')?;
    let stem = match stem {
        "attn_output" => "self_attn.dense",
        "ffn_up" => "mlp.fc1",
        "ffn_down" => "mlp.fc2",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{stem}.{suffix}"))
}

// PhiConfig: context 2048 when config.json omits it.
llama_safetensors_load!(Phi, OPTIONS, default_context = 2048, names = names);
