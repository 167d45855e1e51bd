//! Loading [`GemmaDecoder`]: its facts ([`Hparams`]) from a GGUF's metadata or a
//! transformers config.json, and its weights by llama.cpp's names from either format.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use zoo_core::{Error, Result, SafetensorsSource};

use super::{local_layers, Decoded, GemmaDecoder, GemmaDefaults, Hparams};

/// What a Gemma generation's config.json leaves to the architecture, and how its
/// transformers classes name the layer norms: stated by the generation's file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmaConfigDefaults {
    /// transformers' documented `rope_theta`.
    pub rope_theta: f64,
    /// The local layers' base where config.json has no `rope_local_base_freq`; `None`:
    /// they use `rope_theta` (Gemma 2).
    pub rope_local_base: Option<f64>,
    /// Every `pattern`-th layer global where config.json has no `layer_types` (1: no
    /// local layers, Gemma 1).
    pub sliding_window_pattern: usize,
    /// transformers' documented context, for a config.json without
    /// `max_position_embeddings`.
    pub default_context: Option<usize>,
    /// llama.cpp's norm names to transformers' (see
    /// [`crate::adapters::transformers_name`]).
    pub norms: &'static [(&'static str, &'static str)],
}

impl GemmaConfigDefaults {
    /// Gemma 1's norms, named as Llama's: one before attention, one before the MLP.
    pub const LLAMA_NORMS: &'static [(&'static str, &'static str)] = &[
        ("attn_norm", "input_layernorm"),
        ("ffn_norm", "post_attention_layernorm"),
    ];
    /// Gemma 2's and 3's four norms: before and after attention and the MLP.
    pub const SANDWICH_NORMS: &'static [(&'static str, &'static str)] = &[
        ("attn_norm", "input_layernorm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ];
}

impl GemmaDecoder {
    /// The decoder of a GGUF file with the facts of its metadata: the body of a Gemma
    /// generation's GGUF architecture.
    pub(crate) fn load(
        g: &zoo_core::source::GgufSource,
        defaults: &GemmaDefaults,
        device: &Device,
    ) -> Result<Decoded<Self>> {
        Decoded::from_gguf(g, device, || Self::from_gguf(g, defaults, device))
    }

    /// Reads a Gemma GGUF whose keys are under its `general.architecture`; the
    /// generation's defaults (its file's [`GemmaDefaults`]) fill what the file does not
    /// say.
    pub(crate) fn from_gguf(
        g: &zoo_core::source::GgufSource,
        defaults: &GemmaDefaults,
        device: &Device,
    ) -> Result<Self> {
        let prefix = g.architecture().unwrap_or_default();
        let hp = gguf_hparams(
            g,
            prefix,
            defaults.sliding_window_pattern,
            defaults.rope_base,
            defaults.rope_base_local,
        )?;
        let weights = |name: &str| g.tensor(name, device);
        Self::new(hp, &weights, &|n| g.has_tensor(n), device)
    }
}

/// Hyper-parameters of a Gemma GGUF, under the `prefix` of its `general.architecture`.
fn gguf_hparams(
    g: &zoo_core::source::GgufSource,
    prefix: &str,
    default_pattern: usize,
    default_rope_base: f64,
    default_rope_base_local: f64,
) -> Result<Hparams> {
    let key = |s: &str| format!("{prefix}.{s}");
    let blocks = g.u64(&key("block_count"))? as usize;
    let head_dim = g.u64(&key("attention.key_length"))? as usize;
    let softcap = |s: &str| -> Result<Option<f64>> { Ok(g.f64_opt(&key(s))?.filter(|c| *c > 0.0)) };
    let local = local_layers(blocks, default_pattern);
    let window = g.u64_opt(&key("attention.sliding_window"))?.unwrap_or(0) as usize;
    if window == 0 && local.iter().any(|&l| l) {
        return Err(Error::GgufMetadata {
            path: g.path.clone(),
            key: key("attention.sliding_window"),
            problem: "is missing or 0, but this model's local layers attend over a sliding \
                      window: expected a window of at least 1 position"
                .into(),
        });
    }
    Ok(Hparams {
        heads: g.u64(&key("attention.head_count"))? as usize,
        kv_heads: g.u64(&key("attention.head_count_kv"))? as usize,
        head_dim,
        eps: g.f64(&key("attention.layer_norm_rms_epsilon"))?,
        blocks,
        hidden: g.u64(&key("embedding_length"))? as usize,
        window,
        local,
        rope_base: g
            .f64_opt(&key("rope.freq_base"))?
            .unwrap_or(default_rope_base),
        rope_base_local: g
            .f64_opt(&key("rope.local_freq_base"))?
            .unwrap_or(default_rope_base_local),
        rope_scale: g.f64_opt(&key("rope.scaling.factor"))?.unwrap_or(1.0),
        // llama.cpp writes no query_pre_attn_scalar: it uses the head size for every
        // released text model but the 27B ones (hidden / heads), as here.
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        attn_softcap: softcap("attn_logit_softcapping")?,
        final_softcap: softcap("final_logit_softcapping")?,
        gelu: crate::layers::Gelu::GgmlF16Table,
    })
}

impl GemmaDecoder {
    /// A transformers checkpoint of a Gemma generation: config.json's facts (the
    /// generation's defaults fill what it omits), the weights under transformers' names,
    /// matrices kept in their stored dtype, norms as `1 + w` (transformers computes
    /// `x * (1 + w)`, llama.cpp's files carry `1 + w`).
    pub(crate) fn from_safetensors(
        src: &SafetensorsSource,
        defaults: &GemmaConfigDefaults,
        arch: &str,
        device: &Device,
    ) -> Result<Self> {
        // Through the checks of opening again (sizes in range before any is used: a
        // layer count of 8e17 would be an allocation), as the architecture normalised it.
        let config: serde_json::Value =
            src.parse_config_value(arch, src.normalised_config(Some(defaults.rope_theta))?)?;
        let config = &config;
        let missing = |key: &str| Error::Config {
            path: src.config_path.clone(),
            what: format!("`{arch}` config"),
            detail: format!("missing or invalid `{key}`"),
            hint:
                "config.json must be the one transformers writes for this model (save_pretrained)"
                    .into(),
        };
        let int = |key: &str| {
            config[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| missing(key))
        };
        let float = |key: &str| config[key].as_f64().ok_or_else(|| missing(key));
        let blocks = int("num_hidden_layers")?;
        let local: Vec<bool> = match config["layer_types"].as_array() {
            Some(types) => types
                .iter()
                .map(|t| t.as_str() == Some("sliding_attention"))
                .collect(),
            None => local_layers(blocks, defaults.sliding_window_pattern),
        };
        if local.len() != blocks {
            return Err(missing("layer_types of num_hidden_layers entries"));
        }
        let rope_scale = match src.rope_scaling() {
            None => 1.0,
            Some(s) => {
                let s = s.get("full_attention").unwrap_or(&s);
                match s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(|t| t.as_str())
                {
                    None | Some("default") => 1.0,
                    Some("linear") => s["factor"].as_f64().unwrap_or(1.0),
                    Some(other) => {
                        return Err(Error::Config {
                            path: src.config_path.clone(),
                            what: format!("`{arch}` config"),
                            detail: format!("rope scaling `{other}` is not supported"),
                            hint: "Gemma uses linear scaling on its global layers".into(),
                        })
                    }
                }
            }
        };
        let head_dim = int("head_dim")?;
        let rope_base = float("rope_theta")?;
        let any_local = local.iter().any(|l| *l);
        let hp = Hparams {
            heads: int("num_attention_heads")?,
            kv_heads: int("num_key_value_heads")?,
            head_dim,
            eps: float("rms_norm_eps")?,
            blocks,
            hidden: int("hidden_size")?,
            window: if any_local {
                // Local layers attend over the window: 0 would leave them nothing.
                Some(int("sliding_window")?)
                    .filter(|&w| w > 0)
                    .ok_or_else(|| missing("sliding_window (at least 1 for sliding layers)"))?
            } else {
                0
            },
            local,
            rope_base,
            rope_base_local: config["rope_local_base_freq"]
                .as_f64()
                .or(defaults.rope_local_base)
                .unwrap_or(rope_base),
            rope_scale,
            attn_scale: 1.0
                / (config["query_pre_attn_scalar"]
                    .as_u64()
                    .map_or(head_dim, |s| s as usize) as f64)
                    .sqrt(),
            attn_softcap: config["attn_logit_softcapping"].as_f64(),
            final_softcap: config["final_logit_softcapping"].as_f64(),
            gelu: crate::layers::Gelu::Tanh,
        };
        let hf_name = |name: &str| crate::adapters::transformers_name(name, defaults.norms);
        // SAFETY: read-only maps of files that must not change while loaded.
        let st = unsafe { MmapedSafetensors::multi(&src.weights)? };
        let weights = |name: &str| -> Result<QTensor> {
            // Matrices stay as stored (bf16/f16: half the memory of f32); norms and f32
            // tensors are f32.
            if !name.contains("norm") {
                if let Some(q) = crate::adapters::stored_half(&st, &hf_name(name), device)? {
                    return Ok(q);
                }
            }
            let t: Tensor = st
                .load(&hf_name(name), device)?
                .to_dtype(candle_core::DType::F32)?;
            let t = if name.contains("norm") { (t + 1.0)? } else { t };
            Ok(QTensor::quantize(&t, GgmlDType::F32)?)
        };
        let has = |name: &str| st.get(&hf_name(name)).is_ok();
        Self::new(hp, &weights, &has, device)
    }
}
