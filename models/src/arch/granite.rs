//! Granite 3.x from safetensors (`GraniteForCausalLM`, `granite`).
//!
//! Reference implementation: transformers' `modeling_granite.py`. Built on
//! candle-transformers' `granite`, a Llama-shaped model whose external `Cache` this
//! file owns and rebuilds on reset. What candle does differently, and why the file
//! hands it folded weights rather than the checkpoint's:
//!
//! - candle ignores Granite's four multipliers and attends with `1/sqrt(head_dim)`,
//!   so as is it is wrong for every released Granite 3.x model. All four are linear in
//!   a bias-free weight, so the file folds them in at load: the embedding times
//!   `embedding_multiplier`, `q_proj` times `attention_multiplier * sqrt(head_dim)`
//!   (the rotation is linear), `o_proj` and `down_proj` times `residual_multiplier`,
//!   `lm_head` divided by `logits_scaling`;
//! - candle always reads `lm_head.weight`, where transformers ties it to the
//!   embedding under `tie_word_embeddings` (Granite 3.x does): the folded `lm_head` is
//!   made from the unscaled embedding;
//! - candle's loader unwraps each layer (a missing or misshapen tensor would panic):
//!   the file reads every tensor candle reads with its shape first, so that is an
//!   error instead;
//! - it has no q/k/v/o or MLP biases (the folding assumes none either), runs SiLU
//!   whatever `hidden_act` says, takes the head size as `hidden_size / heads`, and reads
//!   rope scaling in a Llama-3 form of its own: configs where these matter are refused.
//!
//! candle's cache compares the head count (`k.dims()[1]`) with the context length;
//! that never triggers for real configs and is left alone.

use std::collections::HashMap;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::granite as candle_model;
use serde_json::Value;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{refuse_other_head_dim, refuse_rope_scaling, unsupported};

/// Granite (safetensors, f32 on CPU).
#[register_model(
    name = "granite",
    format = safetensors,
    hf_architectures = ["GraniteForCausalLM"],
    model_types = ["granite"],
    load = Granite::load,
)]
pub struct Granite {
    model: candle_model::Granite,
    cache: candle_model::Cache,
    config: candle_model::Config,
    dtype: DType,
    info: ModelInfo,
}

/// transformers' GraniteConfig default.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// transformers' Granite multipliers (each 1.0 when config.json omits it).
struct Multipliers {
    embedding: f64,
    attention: f64,
    residual: f64,
    logits_scaling: f64,
}

impl Granite {
    /// Loads config.json and the safetensors weights, with the multipliers folded in.
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let name = Self::ENTRY.name;
        let info = src.model_info(name, None, device)?;
        let config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        let (mult, tied) = Self::check_config(src, &config)?;
        let hf: candle_model::GraniteConfig = src.parse_config_value(name, config)?;
        let config = hf.into_config(false);
        let (vb, dtype) = Self::folded_weights(src, &config, &mult, tied, device)?;
        let model = candle_model::Granite::load(vb, &config)?;
        let cache = candle_model::Cache::new(true, dtype, &config, device)?;
        Ok(Self {
            model,
            cache,
            config,
            dtype,
            info,
        })
    }

    /// See the file's comment: refuse what candle or the folding cannot compute; the
    /// multipliers and whether the embeddings are tied.
    fn check_config(src: &SafetensorsSource, config: &Value) -> Result<(Multipliers, bool)> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        for key in ["attention_bias", "mlp_bias"] {
            if config[key].as_bool() == Some(true) {
                return Err(refuse(
                    format!("`{key}: true` is not supported"),
                    "candle's Granite has no biases (Granite 3.x has none)",
                ));
            }
        }
        if !matches!(config["hidden_act"].as_str(), None | Some("silu")) {
            return Err(refuse(
                format!("`hidden_act: {}` is not supported", config["hidden_act"]),
                "candle's Granite always uses SiLU",
            ));
        }
        refuse_rope_scaling(src, Self::ENTRY.name)?;
        refuse_other_head_dim(src, Self::ENTRY.name, config)?;
        let mult = |key: &str| match &config[key] {
            Value::Null => Ok(1.0),
            v => v.as_f64().ok_or_else(|| {
                refuse(
                    format!("`{key}` should be a number, found {v}"),
                    "fix config.json",
                )
            }),
        };
        let m = Multipliers {
            embedding: mult("embedding_multiplier")?,
            attention: mult("attention_multiplier")?,
            residual: mult("residual_multiplier")?,
            logits_scaling: mult("logits_scaling")?,
        };
        Ok((m, config["tie_word_embeddings"].as_bool() == Some(true)))
    }

    /// Every tensor candle's Granite reads, checked for its shape and with the
    /// multipliers folded in (see the file's comment).
    fn folded_weights(
        src: &SafetensorsSource,
        cfg: &candle_model::Config,
        m: &Multipliers,
        tied: bool,
        device: &Device,
    ) -> Result<(VarBuilder<'static>, DType)> {
        let (vb, dtype) = src.var_builder(device)?;
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let head_dim = h / cfg.num_attention_heads;
        let (q, kv) = (
            head_dim * cfg.num_attention_heads,
            head_dim * cfg.num_key_value_heads,
        );
        let mut ts = HashMap::new();
        let embed = vb.get((v, h), "model.embed_tokens.weight")?;
        let lm_head = if tied {
            embed.clone()
        } else {
            vb.get((v, h), "lm_head.weight")?
        };
        ts.insert("lm_head.weight".into(), (lm_head / m.logits_scaling)?);
        ts.insert("model.embed_tokens.weight".into(), (embed * m.embedding)?);
        ts.insert("model.norm.weight".into(), vb.get(h, "model.norm.weight")?);
        let q_scale = m.attention * (head_dim as f64).sqrt();
        for l in 0..cfg.num_hidden_layers {
            let tensors: [(&str, Shape, f64); 9] = [
                ("self_attn.q_proj", (q, h).into(), q_scale),
                ("self_attn.k_proj", (kv, h).into(), 1.0),
                ("self_attn.v_proj", (kv, h).into(), 1.0),
                ("self_attn.o_proj", (h, q).into(), m.residual),
                ("mlp.gate_proj", (i, h).into(), 1.0),
                ("mlp.up_proj", (i, h).into(), 1.0),
                ("mlp.down_proj", (h, i).into(), m.residual),
                ("input_layernorm", h.into(), 1.0),
                ("post_attention_layernorm", h.into(), 1.0),
            ];
            for (part, shape, scale) in tensors {
                let name = format!("model.layers.{l}.{part}.weight");
                let t = vb.get(shape, &name)?;
                let t = if scale == 1.0 { t } else { (t * scale)? };
                ts.insert(name, t);
            }
        }
        Ok((VarBuilder::from_tensors(ts, dtype, device), dtype))
    }
}

impl CausalLM for Granite {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(
            self.model
                .forward(input_ids, seqlen_offset, &mut self.cache)?,
        )
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.cache = candle_model::Cache::new(true, self.dtype, &self.config, &self.info.device)?;
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
