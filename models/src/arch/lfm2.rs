//! LFM2 from safetensors (`Lfm2ForCausalLM`, `lfm2`): Liquid's hybrid of gated short
//! convolutions and grouped-query attention with q/k norms.
//!
//! Reference implementation: transformers' `modeling_lfm2.py`. Built on
//! candle-transformers' `lfm2`, whose external `Cache` (KV pairs and convolution
//! states) this file owns.
//!
//! What candle does differently, and what this file does about it:
//! - candle sizes the MLP as `4 * hidden * block_ffn_dim_multiplier` rounded up to
//!   `block_multiple_of`, ignoring `intermediate_size`; transformers takes
//!   `intermediate_size` (`block_ff_dim` in LiquidAI's configs) and, with
//!   `block_auto_adjust_ff_dim`, `2/3` of it times the multiplier, then rounds. The two
//!   disagree for real models (LFM2-350M: 4608 against 4096), so the size is set here
//!   the way transformers computes it;
//! - candle reads `tie_embedding` (LiquidAI's name), transformers writes
//!   `tie_word_embeddings` (default true); layer kinds from `full_attn_idxs` when
//!   `layer_types` is absent, as transformers does;
//! - candle's short convolution ignores its cached state when more than one token
//!   arrives after the first call (it zero-pads as at the start): such a chunk is fed
//!   one token at a time here. A call at position 0 starts from an empty cache, as
//!   candle's attention already does (its convolution state would otherwise leak);
//! - refused: `conv_bias: true` (candle loads no convolution or projection biases), a
//!   `head_dim` other than hidden / heads, rope scaling.

use candle_core::{Device, Tensor};
use candle_transformers::models::lfm2 as candle_model;
use serde_json::{json, Value};
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::{refuse_rope_scaling, unsupported};

/// LFM2 (safetensors, f32 on CPU).
#[register_model(
    name = "lfm2",
    format = safetensors,
    hf_architectures = ["Lfm2ForCausalLM"],
    model_types = ["lfm2"],
    load = Lfm2::load,
)]
pub struct Lfm2 {
    model: candle_model::Model,
    cache: candle_model::Cache,
    info: ModelInfo,
}

/// transformers' Lfm2Config defaults: rope base, context, tied embeddings, and the
/// MLP rounding.
const DEFAULT_ROPE_THETA: f64 = 1_000_000.0;
const DEFAULT_CONTEXT: usize = 128_000;
const DEFAULT_MULTIPLE_OF: u64 = 256;

impl Lfm2 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, Some(DEFAULT_CONTEXT), device)?;
        // The sizes checked before fix_config reads them (a layer count of 8e17 would be
        // a list of 8e17 layer kinds).
        let mut config: Value = src.parse_config_value(
            Self::ENTRY.name,
            src.normalised_config(Some(DEFAULT_ROPE_THETA))?,
        )?;
        let intermediate = Self::fix_config(src, &mut config)?;
        let config: candle_model::Lfm2Config = src.parse_config_value(Self::ENTRY.name, config)?;
        let mut config = config.into_config(false);
        config.intermediate_size = intermediate;
        let (vb, dtype) = src.var_builder(device)?;
        let model = candle_model::Model::new(&config, vb)?;
        let cache = candle_model::Cache::new(true, dtype, &config, device)?;
        Ok(Self { model, cache, info })
    }

    /// See the file's comment: patches config.json for candle's reader and returns the
    /// MLP width transformers computes, or an error for what candle cannot run.
    fn fix_config(src: &SafetensorsSource, config: &mut Value) -> Result<usize> {
        let refuse = |detail: String, hint: &str| unsupported(src, Self::ENTRY.name, detail, hint);
        if config["conv_bias"].as_bool() == Some(true) {
            return Err(refuse(
                "`conv_bias: true` is not supported".into(),
                "candle's LFM2 loads no convolution biases; released LFM2 models have none",
            ));
        }
        refuse_rope_scaling(src, Self::ENTRY.name)?;
        let (hidden, heads) = (
            config["hidden_size"].as_u64(),
            config["num_attention_heads"].as_u64(),
        );
        if let (Some(d), Some(h), Some(n)) = (config["head_dim"].as_u64(), hidden, heads) {
            if n == 0 || d != h / n {
                return Err(refuse(
                    format!("`head_dim: {d}` differs from hidden_size / num_attention_heads"),
                    "candle's LFM2 derives the head size from hidden_size",
                ));
            }
        }
        // transformers lets LiquidAI's names win: `tie_embedding`, `block_ff_dim`.
        let tie = config["tie_embedding"]
            .as_bool()
            .or(config["tie_word_embeddings"].as_bool());
        config["tie_embedding"] = json!(tie.unwrap_or(true));
        if config["layer_types"].is_null() {
            let layers = config["num_hidden_layers"].as_u64().unwrap_or(0);
            let attn: Vec<u64> = match config["full_attn_idxs"].as_array() {
                Some(a) => a.iter().filter_map(|i| i.as_u64()).collect(),
                None => (0..layers).collect(),
            };
            let kinds: Vec<&str> = (0..layers)
                .map(|i| {
                    if attn.contains(&i) {
                        "full_attention"
                    } else {
                        "conv"
                    }
                })
                .collect();
            config["layer_types"] = json!(kinds);
        }
        // Read from config.json by `model_info` (candle's field takes one id only).
        config["eos_token_id"] = Value::Null;
        config["bos_token_id"] = Value::Null;
        Self::intermediate_size(config).map_err(|detail| {
            refuse(
                detail,
                "config.json must be the one transformers writes for this model",
            )
        })
    }

    /// transformers' `Lfm2MLP` width, within the sizes config.json may give (at most
    /// 2^20, as `intermediate_size`): a multiplier or a rounding that leaves them is an
    /// error, not an overflow.
    fn intermediate_size(config: &Value) -> std::result::Result<usize, String> {
        const MAX: u64 = 1 << 20;
        let mut size = config["block_ff_dim"]
            .as_u64()
            .or(config["intermediate_size"].as_u64())
            .ok_or("no `intermediate_size` (nor `block_ff_dim`)")?;
        if config["block_auto_adjust_ff_dim"].as_bool().unwrap_or(true) {
            size = 2 * size.min(MAX) / 3;
            if let Some(mult) = config
                .get("block_ffn_dim_multiplier")
                .map_or(Some(1.0), Value::as_f64)
            {
                let scaled = mult * size as f64;
                if !(scaled.is_finite() && (0.0..=MAX as f64).contains(&scaled)) {
                    return Err(format!(
                        "`block_ffn_dim_multiplier` {mult} gives an MLP width of {scaled}, expected 1 to {MAX}"
                    ));
                }
                let multiple = config["block_multiple_of"]
                    .as_u64()
                    .unwrap_or(DEFAULT_MULTIPLE_OF)
                    .clamp(1, MAX);
                size = (scaled as u64).div_ceil(multiple) * multiple;
            }
        }
        if !(1..=MAX).contains(&size) {
            return Err(format!("an MLP width of {size}, expected 1 to {MAX}"));
        }
        Ok(size as usize)
    }
}

impl CausalLM for Lfm2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        if seqlen_offset == 0 {
            self.cache.clear();
        }
        let len = input_ids.dim(1)?;
        if seqlen_offset == 0 || len == 1 {
            return last_position_logits(self.model.forward(
                input_ids,
                seqlen_offset,
                &mut self.cache,
            )?);
        }
        let mut logits = None;
        for i in 0..len {
            let token = input_ids.narrow(1, i, 1)?;
            logits = Some(
                self.model
                    .forward(&token, seqlen_offset + i, &mut self.cache)?,
            );
        }
        last_position_logits(logits.expect("len > 1"))
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.cache.clear();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
