//! GLM-4 (the 0414 family) from GGUF (`general.architecture = glm4`): q/k/v biases,
//! interleaved rotary embeddings on half of each head, fused gate/up MLP, and a
//! second RMS norm after both attention and MLP ("sandwich" norms).
//!
//! Reference implementation: llama.cpp (`src/models/glm4.cpp`) and transformers'
//! `modeling_glm4.py`. Built on candle-transformers' `quantized_glm4`, which reads
//! llama.cpp's tensor names and metadata. It expands the token embedding to f32.
//!
//! What candle does differently, and what this file does about it:
//! - the rotated part of each head is fixed at half (GLM-4's `partial_rotary_factor`),
//!   ignoring `glm4.rope.dimension_count`; a file whose rotary width is not half the
//!   key width is refused, as is one whose value width differs from the key width
//!   (candle uses the key width for both);
//! - it has no cache reset (its attention drops the cache at position 0): a reset
//!   restores a copy of the freshly loaded model, which shares the weights, so the old
//!   cache's memory is freed.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_glm4 as candle_model;
use zoo_core::{last_position_logits, CausalLM, Error, GgufSource, ModelInfo, Result};
use zoo_macros::register_model;

/// GLM-4-0414 (GGUF, quantized weights).
#[register_model(
    name = "quantized-glm4",
    format = gguf,
    gguf_architectures = ["glm4"],
    load = QuantizedGlm4::load,
)]
pub struct QuantizedGlm4 {
    model: candle_model::ModelWeights,
    /// The model as loaded, with empty caches; a clone shares its weights.
    fresh: candle_model::ModelWeights,
    info: ModelInfo,
}

impl QuantizedGlm4 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(g: &GgufSource, device: &Device) -> Result<Self> {
        let info = ModelInfo::from_gguf(g, device)?;
        let key = g.u64("glm4.attention.key_length")?;
        let value = g.u64_opt("glm4.attention.value_length")?.unwrap_or(key);
        let rotary = g.u64_opt("glm4.rope.dimension_count")?.unwrap_or(key / 2);
        if rotary * 2 != key || value != key {
            return Err(Error::InvalidGguf {
                path: g.path.clone(),
                detail: format!(
                    "glm4 with key width {key}, value width {value} and rotary width {rotary}: \
                     candle's GLM-4 rotates half of each head and uses the key width for values"
                ),
            });
        }
        let fresh = candle_model::ModelWeights::from_gguf(
            g.content_owned()?,
            &mut g.reader(),
            device,
            DType::F32,
        )?;
        Ok(Self {
            model: fresh.clone(),
            fresh,
            info,
        })
    }
}

impl CausalLM for QuantizedGlm4 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.model.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.model = self.fresh.clone();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
