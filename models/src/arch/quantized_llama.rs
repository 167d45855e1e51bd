//! Llama from GGUF (`general.architecture = llama`): the quantized forms llama.cpp
//! writes for Llama-family checkpoints, SmolLM2 among them.
//!
//! Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023).
//! Reference implementation: llama.cpp (`src/models/llama.cpp`). Built on
//! candle-transformers' `quantized_llama`.

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelSource, Result};
use zoo_macros::register_model;

/// Llama (GGUF, quantized weights).
#[register_model(
    name = "quantized-llama",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedLlama::load,
)]
pub struct QuantizedLlama {
    weights: ModelWeights,
    eos: Vec<u32>,
    vocab_size: usize,
    context_length: usize,
    device: Device,
}

impl QuantizedLlama {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let eos = g.eos_token_ids()?;
        let vocab_size = g.vocab_size()?;
        let context_length = g.context_length()?;
        let weights = ModelWeights::from_gguf(g.content_owned()?, &mut g.reader(), device)?;
        Ok(Self {
            weights,
            eos,
            vocab_size,
            context_length,
            device: device.clone(),
        })
    }
}

impl CausalLM for QuantizedLlama {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.weights.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.weights.clear_kv_cache();
        Ok(())
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn architecture(&self) -> &'static str {
        Self::ENTRY.name
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
