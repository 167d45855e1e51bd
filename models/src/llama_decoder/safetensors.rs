//! [`LlamaDecoder`] from a transformers checkpoint: config.json's facts as
//! [`LlamaHparams`], the tensors under transformers' names as a [`TensorSource`].

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use zoo_core::source::SafetensorsSource;
use zoo_core::{Error, Result};

use super::load::{LlamaHparams, RopeScaling, TensorSource};
use super::{LlamaDecoder, LlamaOptions, Mlp, NormKind, Scales};
use crate::layers::{Gelu, Yarn};

/// What the decoder reads of a transformers config.json (`LlamaForCausalLM`,
/// `Qwen2ForCausalLM`).
#[derive(serde::Deserialize)]
struct HfConfig {
    /// GPT-2's family (GPT-BigCode) names the sizes `n_*`; transformers maps them.
    #[serde(alias = "n_embd")]
    hidden_size: usize,
    #[serde(alias = "n_head")]
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(alias = "n_layer")]
    num_hidden_layers: usize,
    vocab_size: usize,
    /// Not read (the weights' shapes give it), but required as transformers requires it
    /// to build the model: a config without it is not a checkpoint's.
    #[allow(dead_code)]
    #[serde(alias = "n_inner")]
    intermediate_size: usize,
    /// transformers' LlamaConfig and Qwen2Config default (LFM2: `norm_eps`).
    #[serde(default = "default_rms_norm_eps", alias = "norm_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(alias = "activation_function")]
    hidden_act: Option<String>,
    /// GPT-BigCode: one key/value head, and whether q.k is scaled at all.
    multi_query: Option<bool>,
    scale_attn_weights: Option<bool>,
    attention_bias: Option<bool>,
    /// Mixture of experts (Mixtral): experts per layer and how many each token uses.
    #[serde(alias = "num_experts")]
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    mlp_bias: Option<bool>,
    use_sliding_window: Option<bool>,
    /// SmolLM3: 1 for a layer that rotates q and k, 0 for a NoPE layer.
    no_rope_layers: Option<Vec<u8>>,
    no_rope_layer_interval: Option<usize>,
    /// LayerNorm architectures' eps (StableLM and Phi `layer_norm_eps`, Starcoder2
    /// `norm_epsilon`).
    #[serde(alias = "layer_norm_epsilon")]
    layer_norm_eps: Option<f64>,
    norm_epsilon: Option<f64>,
    /// StableLM / Phi: per-head q/k LayerNorms (refused), parallel branches.
    qk_layernorm: Option<bool>,
    use_parallel_residual: Option<bool>,
    /// OLMo: q, k and v clamped to `[-clip_qkv, clip_qkv]`.
    clip_qkv: Option<f64>,
    /// The share of each head that is rotated (GLM-4: 0.5).
    partial_rotary_factor: Option<f64>,
    /// Qwen MoE: renormalise the chosen experts' weights (Mixtral always does), and the
    /// layers with a dense MLP instead of experts.
    norm_topk_prob: Option<bool>,
    #[serde(default)]
    mlp_only_layers: Vec<usize>,
    decoder_sparse_step: Option<usize>,
    /// Granite.
    embedding_multiplier: Option<f64>,
    attention_multiplier: Option<f64>,
    residual_multiplier: Option<f64>,
    logits_scaling: Option<f64>,
    /// LFM2's layers and convolution (`conv.rs`).
    #[serde(flatten)]
    conv: super::conv::HfConv,
}

/// Which layers have experts, as transformers' Qwen MoE models decide: not those in
/// `mlp_only_layers`, and every `decoder_sparse_step`-th of the rest (1: all).
fn moe_layers(hf: &HfConfig, refuse: &dyn Fn(String, &str) -> Error) -> Result<Vec<bool>> {
    match hf.decoder_sparse_step.unwrap_or(1) {
        0 => Err(refuse(
            "`decoder_sparse_step` 0".into(),
            "every k-th layer has experts: k must be at least 1",
        )),
        step => Ok((0..hf.num_hidden_layers)
            .map(|i| !hf.mlp_only_layers.contains(&i) && (i + 1) % step == 0)
            .collect()),
    }
}

/// Linear or YaRN scaling as transformers computes it: `factor` (YaRN: else the trained
/// context over the original); YaRN's `original_max_position_embeddings` (else the
/// trained context), `beta_fast` and `beta_slow` (32 and 1), and `attention_factor`, else
/// `mscale / mscale_all_dim` magnitudes, else `0.1 ln(factor) + 1`. YaRN's `truncate:
/// false` is refused (the correction range is floored and ceiled, as llama.cpp does).
fn linear_or_yarn(
    src: &SafetensorsSource,
    kind: &str,
    s: &serde_json::Value,
    base: f64,
    refuse: &dyn Fn(String, &str) -> Error,
) -> Result<RopeScaling> {
    let c = &src.config;
    let ctx = c["max_position_embeddings"].as_f64();
    let original = s["original_max_position_embeddings"].as_f64().or(ctx);
    let factor = s["factor"].as_f64().or_else(|| Some(ctx? / original?));
    let bad = || {
        refuse(
            format!("{kind} rope scaling {s}"),
            "a finite `factor` of at least 1 (YaRN: and an original context of at least 1)",
        )
    };
    let factor = factor
        .filter(|f| f.is_finite() && *f >= 1.0)
        .ok_or_else(bad)?;
    if kind == "linear" {
        return Ok(RopeScaling::Linear(factor));
    }
    let original = original.filter(|o| *o >= 1.0).ok_or_else(bad)?;
    if s["truncate"].as_bool() == Some(false) {
        return Err(refuse(
            format!("YaRN with `truncate: false` ({s})"),
            "zoo floors and ceils the correction range, as transformers does by default",
        ));
    }
    let attention = match (
        s["attention_factor"].as_f64(),
        s["mscale"].as_f64(),
        s["mscale_all_dim"].as_f64(),
    ) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
            Yarn::mscale(factor, m) / Yarn::mscale(factor, all)
        }
        _ => Yarn::mscale(factor, 1.0),
    };
    Ok(RopeScaling::Yarn(Yarn {
        factor,
        original_context: original,
        beta_fast: s["beta_fast"]
            .as_f64()
            .filter(|b| *b != 0.0)
            .unwrap_or(32.0),
        beta_slow: s["beta_slow"].as_f64().filter(|b| *b != 0.0).unwrap_or(1.0),
        base,
        attention,
    }))
}

/// LongRoPE as transformers' Phi-3 computes it for a sequence past the original
/// context, and llama.cpp for a context past it: the long factors when the model's
/// context (`max_position_embeddings`) is past `original_max_position_embeddings`, else
/// the short ones; cos and sin times `attention_factor`, or `sqrt(1 + ln(factor) /
/// ln(original))` with `factor` (else the ratio of the two contexts) past 1.
fn long_rope_factors(
    src: &SafetensorsSource,
    s: &serde_json::Value,
    rotary_dims: usize,
    refuse: &dyn Fn(String, &str) -> Error,
) -> Result<(Vec<f32>, f32)> {
    let c = &src.config;
    let ctx = c["max_position_embeddings"].as_f64();
    let orig = s["original_max_position_embeddings"]
        .as_f64()
        .or(c["original_max_position_embeddings"].as_f64());
    let (Some(ctx), Some(orig)) = (ctx, orig.filter(|o| *o >= 2.0)) else {
        return Err(refuse(
            format!("LongRoPE without `max_position_embeddings` and an `original_max_position_embeddings` of at least 2 ({s})"),
            "both contexts decide which factors apply",
        ));
    };
    let key = if ctx > orig {
        "long_factor"
    } else {
        "short_factor"
    };
    let factors: Option<Vec<f32>> = s[key]
        .as_array()
        .and_then(|a| a.iter().map(|f| f.as_f64().map(|f| f as f32)).collect());
    let factors = match factors {
        Some(f) if f.len() == rotary_dims / 2 && f.iter().all(|f| f.is_finite() && *f > 0.0) => f,
        _ => {
            return Err(refuse(
                format!("LongRoPE `{key}` {}", s[key]),
                &format!(
                    "{} positive numbers, one for each rotated pair",
                    rotary_dims / 2
                ),
            ))
        }
    };
    let scale = s["factor"].as_f64().unwrap_or(ctx / orig);
    let m = match s["attention_factor"].as_f64() {
        Some(m) => m,
        None if scale <= 1.0 => 1.0,
        None => (1.0 + scale.ln() / orig.ln()).sqrt(),
    };
    Ok((factors, m as f32))
}

/// Granite's multipliers as transformers' GraniteConfig reads them (1 when omitted;
/// `attention_multiplier` replaces `1/sqrt(head_dim)`).
fn multipliers(hf: &HfConfig, refuse: &dyn Fn(String, &str) -> Error) -> Result<Scales> {
    let get = |key: &str, v: Option<f64>| -> Result<f64> {
        match v.unwrap_or(1.0) {
            v if v.is_finite() && v != 0.0 => Ok(v),
            v => Err(refuse(
                format!("`{key}` {v}"),
                "each Granite multiplier is a finite number other than 0",
            )),
        }
    };
    Ok(Scales {
        embedding: get("embedding_multiplier", hf.embedding_multiplier)?,
        attention: Some(get("attention_multiplier", hf.attention_multiplier)?),
        residual: get("residual_multiplier", hf.residual_multiplier)?,
        logits: get("logits_scaling", hf.logits_scaling)?,
    })
}

/// Which layers rotate q and k, as transformers' SmolLM3Config decides: its
/// `no_rope_layers` list, else every `no_rope_layer_interval`-th layer (4 by default)
/// does not.
fn nope_layers(hf: &HfConfig, refuse: &dyn Fn(String, &str) -> Error) -> Result<Vec<bool>> {
    let n = hf.num_hidden_layers;
    match &hf.no_rope_layers {
        Some(list) if list.len() != n || list.iter().any(|&f| f > 1) => Err(refuse(
            format!("`no_rope_layers` {list:?} for {n} layers"),
            "the list has one 0 (NoPE) or 1 (rotary) for each of `num_hidden_layers`",
        )),
        Some(list) => Ok(list.iter().map(|&f| f == 1).collect()),
        None => match hf.no_rope_layer_interval.unwrap_or(4) {
            0 => Err(refuse(
                "`no_rope_layer_interval` 0".into(),
                "every k-th layer is NoPE: k must be at least 1",
            )),
            k => Ok((0..n).map(|i| (i + 1) % k != 0).collect()),
        },
    }
}

impl LlamaDecoder {
    /// A transformers checkpoint of a Llama-like architecture: config.json's facts, the
    /// tensors under transformers' names (matrices kept in their stored dtype when bf16
    /// or f16, [`crate::adapters::stored_half`]), q and k in transformers' layout
    /// (`options.hf_rope`), llama3 RoPE scaling as the
    /// factors llama.cpp's converter writes (`rope_freqs.weight`). What the decoder
    /// cannot compute is a Config error that names it.
    ///
    /// `names`: the architecture's own transformers names, tried before the shared ones
    /// (Mixtral's experts).
    pub(crate) fn from_safetensors(
        src: &SafetensorsSource,
        options: &LlamaOptions,
        arch: &str,
        names: Option<fn(&str) -> Option<String>>,
        device: &Device,
    ) -> Result<Self> {
        let refuse = |detail: String, hint: &str| Error::Config {
            path: src.config_path.clone(),
            what: format!("`{arch}` config"),
            detail,
            hint: hint.into(),
        };
        let mut config = src.normalised_config(Some(options.default_rope_base))?;
        for &(key, value) in options.config_defaults {
            if config.get(key).is_none_or(serde_json::Value::is_null) {
                config[key] = serde_json::from_str(value).map_err(|e| {
                    refuse(
                        format!("the file's default `{key}: {value}` is not JSON ({e})"),
                        "a bug in the architecture's file: report it",
                    )
                })?;
            }
        }
        let hf: HfConfig = src.parse_config_value(arch, config)?;
        let (acts, mlp): (&[&str], _) = match options.mlp {
            Mlp::SiluGated => (&["silu"], "SiLU-gated"),
            // The tanh forms; exact (erf) GELU is another function.
            Mlp::Gelu => (&["gelu_pytorch_tanh", "gelu_new"], "a tanh GELU"),
        };
        if let Some(act) = hf.hidden_act.as_deref().filter(|a| !acts.contains(a)) {
            return Err(refuse(
                format!("`hidden_act` {act:?} is not supported"),
                &format!("this architecture's feed-forward is {mlp} ({acts:?})"),
            ));
        }
        for (key, on, allowed) in [
            ("attention_bias", hf.attention_bias, options.qkv_bias),
            ("mlp_bias", hf.mlp_bias, options.mlp_bias),
        ] {
            if on == Some(true) && !allowed {
                return Err(refuse(
                    format!("`{key}: true` is not supported"),
                    "the decoder has biases only where the architecture has them (Qwen2: q, k and v)",
                ));
            }
        }
        if hf.scale_attn_weights == Some(false) {
            return Err(refuse(
                "`scale_attn_weights: false` is not supported".into(),
                "the decoder scales q.k by 1/sqrt(head size), as every released model does",
            ));
        }
        if hf.qk_layernorm == Some(true) {
            return Err(refuse(
                "`qk_layernorm: true` is not supported".into(),
                "per-head LayerNorms of q and k are not implemented on this decoder",
            ));
        }
        if let Some(c) = hf.clip_qkv.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(refuse(
                format!("`clip_qkv` {c}"),
                "a positive bound (or null for none)",
            ));
        }
        if hf.use_sliding_window == Some(true) {
            return Err(refuse(
                "`use_sliding_window: true` is not supported".into(),
                "zoo's Llama decoder masks no window, and released Qwen2, Qwen3 and SmolLM3 models do not use one: set it to false",
            ));
        }
        let head_dim = hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads);
        // transformers rotates `int(head_dim * partial_rotary_factor)` features.
        let partial = hf.partial_rotary_factor.unwrap_or(1.0);
        let rotary_dims = (head_dim as f64 * partial) as usize;
        if !(partial > 0.0 && partial <= 1.0) || rotary_dims == 0 || !rotary_dims.is_multiple_of(2)
        {
            return Err(refuse(
                format!("`partial_rotary_factor` {partial} of a head of {head_dim}"),
                "a factor in (0, 1] that leaves an even number of rotated features",
            ));
        }
        let rope_base = src.rope_theta(Some(options.default_rope_base))?;
        let (mut factors, mut long_rope, mut scaling) = (None, None, None);
        match src.rope_scaling() {
            None => {}
            Some(s) => match s["rope_type"].as_str().or(s["type"].as_str()) {
                Some("llama3") => factors = Some(llama3_factors(&s, rope_base, rotary_dims)),
                Some("longrope" | "su") => {
                    long_rope = Some(long_rope_factors(src, &s, rotary_dims, &refuse)?)
                }
                Some(kind @ ("linear" | "yarn")) => {
                    scaling = Some(linear_or_yarn(src, kind, &s, rope_base, &refuse)?)
                }
                _ => {
                    return Err(refuse(
                        format!("rope scaling {s} is not supported"),
                        "llama3, linear, YaRN and LongRoPE scaling are; remove rope_scaling to run within the trained context",
                    ))
                }
            },
        }
        let hp = LlamaHparams {
            heads: hf.num_attention_heads,
            kv_heads: hf
                .num_key_value_heads
                .or((hf.multi_query == Some(true)).then_some(1))
                .unwrap_or(hf.num_attention_heads),
            head_dim,
            eps: match options.norm {
                NormKind::Layer => hf.layer_norm_eps.or(hf.norm_epsilon).unwrap_or(1e-5),
                NormKind::Rms | NormKind::PlainLayer => hf.rms_norm_eps,
            },
            rope_base,
            blocks: hf.num_hidden_layers,
            vocab: hf.vocab_size,
            experts: hf.num_local_experts.unwrap_or(0),
            used: hf.num_experts_per_tok.unwrap_or(0),
            moe_layers: moe_layers(&hf, &refuse)?,
            conv_layers: match options.short_conv {
                true => hf.conv.layers(hf.num_hidden_layers, &refuse)?,
                false => Vec::new(),
            },
            conv_len: hf.conv.len(),
            norm_topk: hf.norm_topk_prob.unwrap_or(true),
            rotary: if options.nope_layers {
                nope_layers(&hf, &refuse)?
            } else {
                Vec::new()
            },
            long_rope,
            rotary_dims,
            scaling,
            clip_qkv: hf.clip_qkv,
            parallel: options.parallel || hf.use_parallel_residual == Some(true),
            gelu: Gelu::Tanh,
            scales: if options.multipliers {
                multipliers(&hf, &refuse)?
            } else {
                Scales::NONE
            },
        };
        if hp.experts > 0 && (hp.used == 0 || hp.used > hp.experts) {
            return Err(refuse(
                format!("{} experts per token of {}", hp.used, hp.experts),
                "`num_experts_per_tok` must be from 1 to `num_local_experts`",
            ));
        }
        let hf_name = |name: &str| names.and_then(|n| n(name)).unwrap_or_else(|| hf_name(name));
        // SAFETY: read-only maps of files that must not change while loaded.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&src.weights)? };
        let tied = hf.tie_word_embeddings || st.get("lm_head.weight").is_err();
        let tensor = |name: &str, device: &Device| -> Result<QTensor> {
            if name == "rope_freqs.weight" {
                let f = factors.clone().unwrap_or_default();
                let n = f.len();
                return Ok(QTensor::quantize(
                    &Tensor::from_vec(f, n, device)?,
                    GgmlDType::F32,
                )?);
            }
            let hf_name = hf_name(name);
            if let Some(q) = crate::adapters::stored_half(&st, &hf_name, device)? {
                return Ok(q);
            }
            let t = st.load(&hf_name, device)?.to_dtype(DType::F32)?;
            Ok(QTensor::quantize(&t, GgmlDType::F32)?)
        };
        let has = |name: &str| match name {
            "rope_freqs.weight" => factors.is_some(),
            "output.weight" => !tied,
            _ => st.get(&hf_name(name)).is_ok(),
        };
        let invalid = |name: &str, what: String| {
            refuse(
                format!("tensor `{}` {what}", hf_name(name)),
                "the checkpoint may be of another architecture, or config.json may not be its own (check `architectures` and the sizes)",
            )
        };
        let src = TensorSource {
            tensor: &tensor,
            has: &has,
            invalid: &invalid,
        };
        let options = LlamaOptions {
            rope: options.hf_rope,
            ..*options
        };
        Self::build(&hp, &options, &src, device)
    }
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

/// transformers' name of the tensor llama.cpp calls `name`.
fn hf_name(name: &str) -> String {
    crate::adapters::transformers_name(
        name,
        &[
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
        ],
    )
}

/// The per-frequency divisors of llama3 RoPE scaling, as llama.cpp's converter writes
/// them into `rope_freqs.weight` (transformers computes the same scaled frequencies).
fn llama3_factors(s: &serde_json::Value, base: f64, head_dim: usize) -> Vec<f32> {
    let get = |k: &str, d: f64| s[k].as_f64().unwrap_or(d);
    let factor = get("factor", 8.0);
    let (low, high) = (get("low_freq_factor", 1.0), get("high_freq_factor", 4.0));
    let old = get("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / (base as f32).powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}
