//! Mistral from GGUF: llama.cpp writes it as `general.architecture = llama`, the same
//! computation as Llama (its converter keeps no sliding window, and Mistral 7B v0.2
//! and later have none). This entry claims a dense `llama` file whose
//! `general.basename` or `general.name` says Mistral, so the registry reports what the
//! model is; plain Llama files fall back to `quantized-llama`.
//!
//! Paper: "Mistral 7B" (Jiang et al., 2023). Reference implementation: llama.cpp
//! (`src/models/llama.cpp`). Built on candle-transformers' `quantized_llama`.

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use zoo_core::registry::Registered;
use zoo_core::source::GgufSource;
use zoo_core::{last_position_logits, CausalLM, ModelSource, Result};
use zoo_macros::register_model;

/// Mistral (GGUF, quantized weights).
#[register_model(
    name = "quantized-mistral",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedMistral::load,
    detect = is_mistral,
)]
pub struct QuantizedMistral {
    weights: ModelWeights,
    eos: Vec<u32>,
    vocab_size: usize,
    context_length: usize,
    device: Device,
}

impl QuantizedMistral {
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

impl CausalLM for QuantizedMistral {
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

/// A dense `llama` GGUF named Mistral.
pub fn is_mistral(source: &ModelSource) -> bool {
    source
        .as_gguf()
        .is_some_and(|g| !experts(g) && named_mistral(g))
}

fn experts(g: &GgufSource) -> bool {
    g.u64_opt("llama.expert_count").ok().flatten().unwrap_or(0) > 0
}

fn named_mistral(g: &GgufSource) -> bool {
    ["general.basename", "general.name"].iter().any(|k| {
        g.str_opt(k)
            .ok()
            .flatten()
            .is_some_and(|n| n.to_ascii_lowercase().contains("mistral"))
    })
}
