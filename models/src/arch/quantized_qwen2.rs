//! Qwen2 / Qwen2.5 from GGUF (`general.architecture = qwen2`), e.g. Qwen2.5-Coder.
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation:
//! llama.cpp (`src/models/qwen2.cpp`). Built on candle-transformers'
//! `quantized_qwen2` (Llama-like with biases on q/k/v).

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Qwen2 / Qwen2.5 (GGUF, quantized weights).
#[register_model(
    name = "quantized-qwen2",
    format = gguf,
    gguf_architectures = ["qwen2"],
    load = QuantizedQwen2::load,
)]
pub struct QuantizedQwen2 {
    weights: ModelWeights,
    info: ModelInfo,
}

impl QuantizedQwen2 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let weights = ModelWeights::from_gguf(g.content_owned()?, &mut g.reader(), device)?;
        Ok(Self { weights, info })
    }
}

impl CausalLM for QuantizedQwen2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.weights.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.weights.clear_kv_cache();
        Ok(())
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.info.eos_token_ids
    }

    fn vocab_size(&self) -> usize {
        self.info.vocab_size
    }

    fn architecture(&self) -> &'static str {
        Self::ENTRY.name
    }

    fn context_length(&self) -> usize {
        self.info.context_length
    }

    fn device(&self) -> &Device {
        &self.info.device
    }
}
