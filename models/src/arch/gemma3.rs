//! Gemma 3 from safetensors (`Gemma3ForCausalLM`, the text models such as 270M and 1B).
//!
//! Paper: "Gemma 3 Technical Report" (Gemma Team, 2025). Reference implementation:
//! transformers' `modeling_gemma3.py`. Built on zoo's Gemma decoder (`gemma_decoder.rs`,
//! weights kept as f32), not on candle-transformers 0.11.1's `gemma3`, whose
//! sliding-window mask admits one key too many inside a forward call (`i - j <= w`
//! where transformers has `i - j < w`).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{Error, Result, SafetensorsSource};
use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::gemma_decoder::{GemmaDecoder, Hparams};

/// Gemma 3 text (safetensors, weights in their stored dtype).
#[register_model(
    name = "gemma3",
    format = safetensors,
    hf_architectures = ["Gemma3ForCausalLM"],
    model_types = ["gemma3_text"],
    load = Gemma3::load,
    batching = true,
)]
pub struct Gemma3(Decoded<GemmaDecoder>);

/// transformers' Gemma3TextConfig defaults.
const DEFAULT_ROPE_THETA: f64 = 1_000_000.0;
const DEFAULT_ROPE_LOCAL_BASE: f64 = 10_000.0;
const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;

/// The transformers name of a weight llama.cpp calls `name`: Gemma 3's four norms per
/// layer.
fn hf_name(name: &str) -> String {
    crate::adapters::transformers_name(
        name,
        &[
            ("attn_norm", "input_layernorm"),
            ("post_attention_norm", "post_attention_layernorm"),
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
        ],
    )
}

impl Gemma3 {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let info = src.model_info(Self::ENTRY.name, None, device)?;
        let config = src.normalised_config(Some(DEFAULT_ROPE_THETA))?;
        let missing = |key: &str| Error::Config {
            path: src.config_path.clone(),
            what: "`gemma3` config".into(),
            detail: format!("no `{key}`"),
            hint: "config.json must be the one transformers writes for Gemma3ForCausalLM".into(),
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
            None => {
                let pattern = config["sliding_window_pattern"]
                    .as_u64()
                    .map_or(DEFAULT_SLIDING_WINDOW_PATTERN, |p| p as usize);
                crate::gemma_decoder::local_layers(blocks, pattern)
            }
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
                            what: "`gemma3` config".into(),
                            detail: format!("rope scaling `{other}` is not supported"),
                            hint: "Gemma 3 uses linear scaling on its global layers".into(),
                        })
                    }
                }
            }
        };
        let hp = Hparams {
            heads: int("num_attention_heads")?,
            kv_heads: int("num_key_value_heads")?,
            head_dim: int("head_dim")?,
            eps: float("rms_norm_eps")?,
            blocks,
            hidden: int("hidden_size")?,
            window: int("sliding_window")?,
            local,
            rope_base: float("rope_theta")?,
            rope_base_local: config["rope_local_base_freq"]
                .as_f64()
                .unwrap_or(DEFAULT_ROPE_LOCAL_BASE),
            rope_scale,
            attn_scale: 1.0 / (int("query_pre_attn_scalar")? as f64).sqrt(),
            attn_softcap: config["attn_logit_softcapping"].as_f64(),
            final_softcap: config["final_logit_softcapping"].as_f64(),
            gelu: crate::layers::Gelu::Tanh,
        };
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
            // transformers' Gemma norms compute x * (1 + w); llama.cpp's names carry 1 + w.
            let t = if name.contains("norm") { (t + 1.0)? } else { t };
            Ok(QTensor::quantize(&t, GgmlDType::F32)?)
        };
        let has = |name: &str| st.get(&hf_name(name)).is_ok();
        let decoder = GemmaDecoder::new(hp, &weights, &has, device)?;
        Ok(Self(Decoded { decoder, info }))
    }
}
