//! Qwen3 from GGUF (`general.architecture = qwen3`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation:
//! llama.cpp (`src/models/qwen3.cpp`): Llama-like with per-head q/k RMS norms and NeoX
//! rotary halves. Built on zoo's Llama decoder (`llama_decoder.rs`), not on
//! candle-transformers 0.11.1's `quantized_qwen3`, which takes its rotary tables' dtype
//! from a `general.dtype` key llama.cpp does not write and otherwise builds them in
//! f16 (logits off by ~1e-3 on the conformance fixture; positions above 2048 not even
//! representable), and expands the embedding to f32.

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::llama_decoder::LlamaDecoder;

/// Qwen3 (GGUF, quantized weights).
#[register_model(
    name = "quantized-qwen3",
    format = gguf,
    gguf_architectures = ["qwen3"],
    load = QuantizedQwen3::load,
)]
pub struct QuantizedQwen3 {
    decoder: LlamaDecoder,
    info: ModelInfo,
}

/// transformers' Qwen3Config default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedQwen3 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = LlamaDecoder::from_gguf(g, "qwen3", false, DEFAULT_ROPE_BASE, device)?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedQwen3 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
