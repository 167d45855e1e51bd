//! Mixtral from GGUF: llama.cpp writes it as `general.architecture = llama` with
//! `llama.expert_count` experts per layer, which is how this entry claims such a file
//! (the registry asks each entry that shares the `llama` string; see `detect`).
//!
//! Paper: "Mixtral of Experts" (Jiang et al., 2024). Reference implementation:
//! llama.cpp (`src/models/llama.cpp`, MoE branch) and transformers'
//! `modeling_mixtral.py`. Built on zoo's Llama decoder (`llama_decoder.rs`): candle's
//! `quantized_llama` reads only the old per-expert tensors (`blk.N.ffn_gate.E.weight`)
//! while current llama.cpp stacks the experts (`blk.N.ffn_gate_exps.weight`); both load.

use candle_core::{Device, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::llama_decoder::LlamaDecoder;

/// Mixtral (GGUF, quantized weights, sparse mixture of experts).
#[register_model(
    name = "quantized-mixtral",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedMixtral::load,
    detect = is_mixtral,
)]
pub struct QuantizedMixtral {
    decoder: LlamaDecoder,
    info: ModelInfo,
}

/// transformers' MixtralConfig default.
const DEFAULT_ROPE_BASE: f64 = 1_000_000.0;

impl QuantizedMixtral {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let decoder = LlamaDecoder::from_gguf(g, "llama", true, DEFAULT_ROPE_BASE, device)?;
        Ok(Self { decoder, info })
    }
}

impl CausalLM for QuantizedMixtral {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}

/// A `llama` GGUF with experts (`llama.expert_count` > 0).
pub fn is_mixtral(source: &ModelSource) -> bool {
    source
        .as_gguf()
        .is_some_and(|g| g.u64_opt("llama.expert_count").ok().flatten().unwrap_or(0) > 0)
}
