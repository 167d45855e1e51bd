//! Starcoder2 from safetensors (`Starcoder2ForCausalLM`, `starcoder2`).
//!
//! Reference implementation: transformers' `modeling_starcoder2.py`. Built on zoo's
//! Llama decoder (`llama_decoder/`): LayerNorms with weight and bias, biases on every
//! projection (`use_bias`), a GELU MLP (`c_fc`, tanh GELU, `c_proj`), NeoX halves;
//! matrices in their stored dtype, the batched forward. The decoder masks no sliding
//! window (4096 in the released models): the context stops at the window.
//! candle-transformers' `starcoder2` widens every weight to f32 and applies its window
//! only inside one forward call, with one key too many.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_safetensors_load, LlamaDecoder, LlamaOptions};

/// Starcoder2 (safetensors, weights in their stored dtype).
#[register_model(
    name = "starcoder2",
    format = safetensors,
    hf_architectures = ["Starcoder2ForCausalLM"],
    model_types = ["starcoder2"],
    load = Starcoder2::load,
    batching = true,
)]
pub struct Starcoder2(Decoded<LlamaDecoder>);

// GPT-2's block (LayerNorms, biases, the GELU MLP); Starcoder2Config's rope default is
// Llama's.
const OPTIONS: LlamaOptions = LlamaOptions::GELU_BIASED;

/// transformers' names of the MLP's matrices.
fn names(name: &str) -> Option<String> {
    let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    let (stem, suffix) = rest.split_once('.')?;
    let stem = match stem {
        "ffn_up" => "mlp.c_fc",
        "ffn_down" => "mlp.c_proj",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{stem}.{suffix}"))
}

llama_safetensors_load!(
    Starcoder2,
    OPTIONS,
    default_context = 4096,
    window_limits_context,
    names = names
);
