//! LFM2 from GGUF (`general.architecture = lfm2`): Liquid's hybrid of gated short
//! convolutions and grouped-query attention with q/k norms (layers with
//! `head_count_kv` 0 are convolutions).
//!
//! Reference implementation: llama.cpp (`src/models/lfm2.cpp`) and transformers'
//! `modeling_lfm2.py`. Built on candle-transformers' `quantized_lfm2`, which reads
//! llama.cpp's tensor names and metadata (rope base, convolution length, per-layer KV
//! heads) and keeps its rotary tables in f32. It expands the token embedding to f32.
//!
//! What candle does differently, and what this file does about it:
//! - its short convolution ignores the cached state when more than one token arrives
//!   after the first call (it zero-pads as at the start): such a chunk is fed one
//!   token at a time here;
//! - it has no way to clear its caches. A call at position 0 with several tokens
//!   starts clean by candle's construction (attention drops its cache at position 0,
//!   the convolutions' prompt path replaces their state); a single token at position
//!   0 would read the previous sequence's convolution state, so then the model is
//!   rebuilt from the file (`reset_cache` marks it; the rebuild copies the weights
//!   again, which a multi-token prompt, the usual case, never needs).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_lfm2 as candle_model;
use zoo_core::{last_position_logits, CausalLM, GgufSource, ModelInfo, Result};
use zoo_macros::register_model;

/// LFM2 (GGUF, quantized weights).
#[register_model(
    name = "quantized-lfm2",
    format = gguf,
    gguf_architectures = ["lfm2"],
    load = QuantizedLfm2::load,
)]
pub struct QuantizedLfm2 {
    model: candle_model::ModelWeights,
    /// Whether the model has run since it was built (its convolution states may hold
    /// a sequence).
    used: bool,
    /// The file the model is rebuilt from.
    path: PathBuf,
    info: ModelInfo,
}

impl QuantizedLfm2 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(g: &GgufSource, device: &Device) -> Result<Self> {
        let info = ModelInfo::from_gguf(g, device)?;
        Ok(Self {
            model: Self::build(g, device)?,
            used: false,
            path: g.path.clone(),
            info,
        })
    }

    fn build(g: &GgufSource, device: &Device) -> Result<candle_model::ModelWeights> {
        Ok(candle_model::ModelWeights::from_gguf(
            g.content_owned()?,
            &mut g.reader(),
            device,
        )?)
    }

    /// A fresh model (empty caches) from the same file.
    fn rebuild(&mut self) -> Result<()> {
        let g = GgufSource::open(&self.path)?;
        self.model = Self::build(&g, &self.info.device)?;
        self.used = false;
        Ok(())
    }
}

impl CausalLM for QuantizedLfm2 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        let len = input_ids.dim(1)?;
        if seqlen_offset == 0 && len == 1 && self.used {
            self.rebuild()?;
        }
        self.used = true;
        if seqlen_offset == 0 || len == 1 {
            return last_position_logits(self.model.forward(input_ids, seqlen_offset)?);
        }
        let mut logits = None;
        for i in 0..len {
            let token = input_ids.narrow(1, i, 1)?;
            logits = Some(self.model.forward(&token, seqlen_offset + i)?);
        }
        last_position_logits(logits.expect("len > 1"))
    }

    /// Nothing to free here: the next call at position 0 starts clean (see the
    /// file's comment).
    fn reset_cache(&mut self) -> Result<()> {
        Ok(())
    }

    zoo_core::causal_lm_info!(info);
}
