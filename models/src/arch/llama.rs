//! Llama from safetensors: Llama 1/2/3, SmolLM and every checkpoint whose config.json
//! says `LlamaForCausalLM`.
//!
//! Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023).
//! Reference implementation: transformers' `modeling_llama.py`. Built on
//! candle-transformers' `llama`, whose external `Cache` this file owns and rebuilds on
//! reset, and whose config reader this file replaces: candle's quietly uses rope_theta
//! 10000 when config.json (transformers 5.x) keeps it in `rope_parameters`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as candle_llama;
use serde::Deserialize;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, Error, Result, SafetensorsSource};
use zoo_macros::register_model;

/// Llama (safetensors, f32 on CPU).
#[register_model(
    name = "llama",
    format = safetensors,
    hf_architectures = ["LlamaForCausalLM"],
    model_types = ["llama"],
    load = Llama::load,
)]
pub struct Llama {
    model: candle_llama::Llama,
    cache: candle_llama::Cache,
    config: candle_llama::Config,
    eos: Vec<u32>,
    dtype: DType,
    device: Device,
}

/// The fields of transformers' `LlamaConfig` this model reads. Fields without a
/// documented default are required; a missing one is an error that names it.
#[derive(Debug, Deserialize)]
struct HfConfig {
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
}

// transformers' LlamaConfig defaults.
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_position_embeddings() -> usize {
    2048
}
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Llama {
    /// Loads config.json and the safetensors weights (memory-mapped).
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let hf: HfConfig = src.parse_config(Self::ENTRY.name)?;
        let rope_theta = src.rope_theta(Some(DEFAULT_ROPE_THETA))?;
        let rope_scaling = match src.rope_scaling() {
            None => None,
            Some(v) => Some(serde_json::from_value::<candle_llama::Llama3RopeConfig>(v.clone()).map_err(|e| Error::Config {
                path: src.config_path.clone(),
                what: "`llama` config".into(),
                detail: format!("unsupported rope scaling {v}: {e}"),
                hint: "only llama3-style rope scaling is supported for llama; remove rope_scaling or use a GGUF build".into(),
            })?),
        };
        let eos = src.eos_token_ids();
        if eos.is_empty() {
            return Err(Error::Config {
                path: src.config_path.clone(),
                what: "`llama` config".into(),
                detail: "no `eos_token_id` in config.json or generation_config.json".into(),
                hint: "add the model's eos_token_id to config.json".into(),
            });
        }
        let config = candle_llama::Config {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            vocab_size: hf.vocab_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            use_flash_attn: false,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: rope_theta as f32,
            bos_token_id: hf.bos_token_id,
            eos_token_id: Some(candle_llama::LlamaEosToks::Multiple(eos.clone())),
            rope_scaling,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
        };
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&src.weights, dtype, device)? };
        let model = candle_llama::Llama::load(vb, &config)?;
        let cache = candle_llama::Cache::new(true, dtype, &config, device)?;
        Ok(Self {
            model,
            cache,
            config,
            eos,
            dtype,
            device: device.clone(),
        })
    }
}

impl CausalLM for Llama {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(
            self.model
                .forward(input_ids, seqlen_offset, &mut self.cache)?,
        )
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.cache = candle_llama::Cache::new(true, self.dtype, &self.config, &self.device)?;
        Ok(())
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn architecture(&self) -> &'static str {
        Self::ENTRY.name
    }

    fn context_length(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
