//! Qwen2 / Qwen2.5 from GGUF (`general.architecture = qwen2`), e.g. Qwen2.5-Coder.
//!
//! Paper: "Qwen2 Technical Report" (Yang et al., 2024). Reference implementation:
//! llama.cpp (`src/models/qwen2.cpp`): Llama-like with biases on q/k/v and NeoX rotary
//! halves. Built on zoo's Llama decoder (`llama_decoder.rs`): candle's
//! `quantized_qwen2` expands the 151,936-token embedding to f32 (519 MiB for 0.5B).

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::llama_decoder::LlamaDecoder;

/// Qwen2 / Qwen2.5 (GGUF, quantized weights).
#[register_model(
    name = "quantized-qwen2",
    format = gguf,
    gguf_architectures = ["qwen2"],
    load = QuantizedQwen2::load,
)]
pub struct QuantizedQwen2 {
    decoder: LlamaDecoder,
    info: ModelInfo,
}

/// transformers' Qwen2Config default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedQwen2 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = LlamaDecoder::from_gguf(g, "qwen2", false, DEFAULT_ROPE_BASE, device)?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedQwen2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
