//! Gemma 2 from GGUF (`general.architecture = gemma2`).
//!
//! Paper: "Gemma 2: Improving Open Language Models at a Practical Size" (2024).
//! Reference implementation: llama.cpp (`src/models/gemma2.cpp`). Built on zoo's Gemma
//! decoder (`gemma_decoder.rs`), with Gemma 2's post-norms, attention and final logit
//! soft-capping and sliding-window local layers; candle-transformers 0.11.1 has no
//! quantized Gemma 2.

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::gemma_decoder::GemmaDecoder;

/// Gemma 2 (GGUF, quantized weights).
#[register_model(
    name = "quantized-gemma2",
    format = gguf,
    gguf_architectures = ["gemma2"],
    load = QuantizedGemma2::load,
)]
pub struct QuantizedGemma2 {
    decoder: GemmaDecoder,
    info: ModelInfo,
}

/// llama.cpp's Gemma 2: local and global layers alternate, local first
/// (`set_swa_pattern(2)`); transformers' Gemma2Config rope default.
const SLIDING_WINDOW_PATTERN: usize = 2;
const DEFAULT_ROPE_BASE: f64 = 10_000.0;
const DEFAULT_ROPE_BASE_LOCAL: f64 = 10_000.0;

impl QuantizedGemma2 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = GemmaDecoder::from_gguf(
            g,
            "gemma2",
            SLIDING_WINDOW_PATTERN,
            DEFAULT_ROPE_BASE,
            DEFAULT_ROPE_BASE_LOCAL,
            device,
        )?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedGemma2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
