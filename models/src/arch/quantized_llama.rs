//! Llama from GGUF (`general.architecture = llama`): the quantized forms llama.cpp
//! writes for Llama-family checkpoints, SmolLM2 among them. The fallback for `llama`
//! files that neither quantized-mistral nor quantized-mixtral claims.
//!
//! Paper: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023).
//! Reference implementation: llama.cpp (`src/models/llama.cpp`). Built on zoo's
//! Llama decoder (`llama_decoder.rs`; see there why not candle's `quantized_llama`).

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::llama_decoder::LlamaDecoder;

/// Llama (GGUF, quantized weights).
#[register_model(
    name = "quantized-llama",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedLlama::load,
)]
pub struct QuantizedLlama {
    decoder: LlamaDecoder,
    info: ModelInfo,
}

/// transformers' LlamaConfig default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedLlama {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = LlamaDecoder::from_gguf(g, "llama", true, DEFAULT_ROPE_BASE, device)?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedLlama {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
