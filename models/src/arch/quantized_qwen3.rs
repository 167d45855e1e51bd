//! Qwen3 from GGUF (`general.architecture = qwen3`).
//!
//! Paper: "Qwen3 Technical Report" (Yang et al., 2025). Reference implementation:
//! llama.cpp (`src/models/qwen3.cpp`). Built on candle-transformers'
//! `quantized_qwen3` (Llama-like with q/k norms), which takes its rotary tables' dtype
//! from a `general.dtype` key that llama.cpp does not write and otherwise builds them
//! in f16: sin/cos lose precision (logits off by ~1e-3 on the conformance fixture)
//! and positions above 2048 are not even representable. This file sets
//! `general.dtype = 0` (f32) in the header it hands to candle.

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen3::ModelWeights;
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

/// Qwen3 (GGUF, quantized weights).
#[register_model(
    name = "quantized-qwen3",
    format = gguf,
    gguf_architectures = ["qwen3"],
    load = QuantizedQwen3::load,
)]
pub struct QuantizedQwen3 {
    weights: ModelWeights,
    info: ModelInfo,
}

impl QuantizedQwen3 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let mut content = g.content_owned()?;
        content.metadata.insert(
            "general.dtype".into(),
            candle_core::quantized::gguf_file::Value::U32(0),
        );
        let weights = ModelWeights::from_gguf(content, &mut g.reader(), device)?;
        Ok(Self { weights, info })
    }
}

impl CausalLM for QuantizedQwen3 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits(self.weights.forward(input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.weights.clear_kv_cache();
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
