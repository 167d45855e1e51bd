//! Gemma 3 from GGUF (`general.architecture = gemma3`), text part.
//!
//! Paper: "Gemma 3 Technical Report" (Gemma Team, 2025). Reference implementation:
//! llama.cpp (`src/models/gemma3.cpp`) and transformers' `modeling_gemma3.py`.
//!
//! Built on zoo's Gemma decoder (`gemma_decoder.rs`), not on candle-transformers
//! 0.11.1's `quantized_gemma3`, which uses SiLU in the feed-forward where Gemma uses
//! GELU (the first logit of the real 270M model comes out 31.95 instead of llama.cpp's
//! 22.9; candle issue 3745, fix 3747 unmerged), has no `clear_kv_cache`, mis-masks the
//! sliding window and allocates ~2.3 GiB of rotary tables for the 270M model.

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::gemma_decoder::GemmaDecoder;

/// Gemma 3 (GGUF, quantized weights), text only.
#[register_model(
    name = "quantized-gemma3",
    format = gguf,
    gguf_architectures = ["gemma3"],
    load = QuantizedGemma3::load,
)]
pub struct QuantizedGemma3 {
    decoder: GemmaDecoder,
    info: ModelInfo,
}

/// llama.cpp's Gemma 3: five local layers, then one global (`set_swa_pattern(6)`), and
/// transformers' Gemma3TextConfig rope defaults where the GGUF omits them.
const SLIDING_WINDOW_PATTERN: usize = 6;
const DEFAULT_ROPE_BASE: f64 = 1_000_000.0;
const DEFAULT_ROPE_BASE_LOCAL: f64 = 10_000.0;

impl QuantizedGemma3 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = GemmaDecoder::from_gguf(
            g,
            "gemma3",
            SLIDING_WINDOW_PATTERN,
            DEFAULT_ROPE_BASE,
            DEFAULT_ROPE_BASE_LOCAL,
            device,
        )?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedGemma3 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
