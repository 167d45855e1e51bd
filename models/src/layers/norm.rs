//! RMS norm over the last dimension.

use candle_core::{Module, Result, Tensor};

/// RMS norm over the last dimension with a weight read from a GGUF (llama.cpp stores
/// Gemma's `1 + w` already added).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)
    }
}
