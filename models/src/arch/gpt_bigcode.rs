//! GPT-BigCode from safetensors (`GPTBigCodeForCausalLM`, `gpt_bigcode`): StarCoder 1
//! and SantaCoder. GPT-2 blocks (layer norms with bias, learned positions, tanh-GELU
//! MLP) with multi-query attention; the output projection is the token embedding.
//!
//! Paper: "StarCoder: may the source be with you!" (Li et al., 2023). Reference
//! implementation: transformers' `modeling_gpt_bigcode.py`. Built on
//! candle-transformers' `bigcode`.
//!
//! candle's `Config` does not deserialize (its fields are public): it is built here
//! from config.json's GPT-2 names (`n_embd`, `n_layer`, `n_head`, `n_positions`, or
//! transformers' aliases `hidden_size`, ...). candle's model has no `clear_kv_cache`: a
//! reset rebuilds it from the memory-mapped weights.
//!
//! Refused, because candle computes only part of what the config may say:
//! - `multi_query: false`: candle's multi-head path splits the fused q/k/v by
//!   `hidden_size` where transformers splits by the head count, so its forward fails
//!   (every released GPT-BigCode model is multi-query);
//! - an activation other than tanh-GELU (`gelu_pytorch_tanh` / `gelu_new`; candle's
//!   MLP hardcodes it);
//! - `scale_attn_weights: false`, untied embeddings, cross-attention.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bigcode as candle_model;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::unsupported;

/// GPT-BigCode: StarCoder 1, SantaCoder (safetensors, f32 on CPU).
#[register_model(
    name = "gpt-bigcode",
    format = safetensors,
    hf_architectures = ["GPTBigCodeForCausalLM"],
    model_types = ["gpt_bigcode"],
    load = GptBigcode::load,
)]
pub struct GptBigcode {
    model: candle_model::GPTBigCode,
    /// What `reset_cache` rebuilds the model from: candle's GPT-BigCode has no
    /// `clear_kv_cache`.
    vb: VarBuilder<'static>,
    info: ModelInfo,
}

/// transformers' GPTBigCodeConfig default.
const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;

impl GptBigcode {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let config = Self::config(src)?;
        let info = src.model_info(
            Self::ENTRY.name,
            Some(config.max_position_embeddings),
            device,
        )?;
        let (vb, _dtype) = src.var_builder(device)?;
        let model = candle_model::GPTBigCode::load(vb.clone(), config)?;
        Ok(Self { model, vb, info })
    }

    /// candle's config from config.json, or an error for what candle cannot compute.
    fn config(src: &SafetensorsSource) -> Result<candle_model::Config> {
        let c = &src.config;
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        let size = |keys: [&str; 2]| -> Result<usize> {
            keys.iter()
                .find_map(|k| c[*k].as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| {
                    refuse(
                        format!("no `{}` (nor `{}`)", keys[0], keys[1]),
                        "config.json must be the one transformers writes for GPT-BigCode",
                    )
                })
        };
        let flag = |key: &str, default: bool| c[key].as_bool().unwrap_or(default);
        if !flag("multi_query", true) {
            return Err(refuse(
                "`multi_query: false` is not supported".into(),
                "candle's GPT-BigCode computes only multi-query attention (StarCoder, SantaCoder)",
            ));
        }
        let act = c["activation_function"]
            .as_str()
            .unwrap_or("gelu_pytorch_tanh");
        if !matches!(act, "gelu_pytorch_tanh" | "gelu_new") {
            return Err(refuse(
                format!("`activation_function: {act}` is not supported"),
                "candle's GPT-BigCode MLP uses the tanh approximation of GELU (gelu_pytorch_tanh)",
            ));
        }
        if !flag("scale_attn_weights", true) {
            return Err(refuse(
                "`scale_attn_weights: false` is not supported".into(),
                "candle's GPT-BigCode always scales attention by 1/sqrt(head_dim)",
            ));
        }
        if !flag("tie_word_embeddings", true) {
            return Err(refuse(
                "untied word embeddings are not supported".into(),
                "candle's GPT-BigCode projects with the token embedding `transformer.wte`",
            ));
        }
        if flag("add_cross_attention", false) {
            return Err(refuse(
                "`add_cross_attention: true` is not supported".into(),
                "zoo runs decoder-only GPT-BigCode models",
            ));
        }
        Ok(candle_model::Config {
            vocab_size: size(["vocab_size", "vocab_size"])?,
            max_position_embeddings: size(["n_positions", "max_position_embeddings"])?,
            num_hidden_layers: size(["n_layer", "num_hidden_layers"])?,
            hidden_size: size(["n_embd", "hidden_size"])?,
            layer_norm_epsilon: c["layer_norm_epsilon"]
                .as_f64()
                .unwrap_or(DEFAULT_LAYER_NORM_EPS),
            n_inner: c["n_inner"].as_u64().map(|v| v as usize),
            num_attention_heads: size(["n_head", "num_attention_heads"])?,
            multi_query: true,
            use_cache: true,
        })
    }
}

/// A copy of candle's config (which is not `Clone`).
fn copy(c: &candle_model::Config) -> candle_model::Config {
    candle_model::Config {
        vocab_size: c.vocab_size,
        max_position_embeddings: c.max_position_embeddings,
        num_hidden_layers: c.num_hidden_layers,
        hidden_size: c.hidden_size,
        layer_norm_epsilon: c.layer_norm_epsilon,
        n_inner: c.n_inner,
        num_attention_heads: c.num_attention_heads,
        multi_query: c.multi_query,
        use_cache: c.use_cache,
    }
}

impl CausalLM for GptBigcode {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        let config = copy(self.model.config());
        self.model = candle_model::GPTBigCode::load(self.vb.clone(), config)?;
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
