//! Gemma (1) from GGUF (`general.architecture = gemma`).
//!
//! Paper: "Gemma: Open Models Based on Gemini Research and Technology" (2024).
//! Reference implementation: llama.cpp (`src/models/gemma.cpp`). Built on zoo's Gemma
//! decoder (`gemma_decoder.rs`): candle-transformers 0.11.1 has no quantized Gemma 1
//! (its `quantized_gemma3` wants the Gemma 3 norms).

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::gemma_decoder::GemmaDecoder;

/// Gemma (GGUF, quantized weights).
#[register_model(
    name = "quantized-gemma",
    format = gguf,
    gguf_architectures = ["gemma"],
    load = QuantizedGemma::load,
)]
pub struct QuantizedGemma {
    decoder: GemmaDecoder,
    info: ModelInfo,
}

/// Gemma 1 has no local layers; transformers' GemmaConfig rope default.
const SLIDING_WINDOW_PATTERN: usize = 1;
const DEFAULT_ROPE_BASE: f64 = 10_000.0;
const DEFAULT_ROPE_BASE_LOCAL: f64 = 10_000.0;

impl QuantizedGemma {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = GemmaDecoder::from_gguf(
            g,
            "gemma",
            SLIDING_WINDOW_PATTERN,
            DEFAULT_ROPE_BASE,
            DEFAULT_ROPE_BASE_LOCAL,
            device,
        )?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedGemma {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
