//! Mistral from GGUF: llama.cpp writes it as `general.architecture = llama`, the same
//! computation as Llama (its converter keeps no sliding window, and Mistral 7B v0.2
//! and later have none). This entry claims a dense `llama` file whose
//! `general.basename` or `general.name` says Mistral, so the registry reports what the
//! model is; plain Llama files fall back to `quantized-llama`.
//!
//! Paper: "Mistral 7B" (Jiang et al., 2023). Reference implementation: llama.cpp
//! (`src/models/llama.cpp`). Built on zoo's Llama decoder (`llama_decoder.rs`).

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::llama_decoder::LlamaDecoder;

/// Mistral (GGUF, quantized weights).
#[register_model(
    name = "quantized-mistral",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedMistral::load,
    detect = is_mistral,
)]
pub struct QuantizedMistral {
    decoder: LlamaDecoder,
    info: ModelInfo,
}

/// transformers' MistralConfig default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedMistral {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = LlamaDecoder::from_gguf(g, "llama", true, DEFAULT_ROPE_BASE, device)?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedMistral {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}

/// A dense `llama` GGUF (not one `quantized-mixtral` claims) named Mistral.
pub fn is_mistral(source: &ModelSource) -> bool {
    !super::quantized_mixtral::is_mixtral(source)
        && source.as_gguf().is_some_and(|g| {
            ["general.basename", "general.name"].iter().any(|k| {
                g.str_opt(k)
                    .ok()
                    .flatten()
                    .is_some_and(|n| n.to_ascii_lowercase().contains("mistral"))
            })
        })
}
