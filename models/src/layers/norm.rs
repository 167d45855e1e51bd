//! RMS norm over the last dimension, and the norms a decoder chooses from.

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

/// The norm a decoder applies to its branches and output: an RMS norm with a weight,
/// or a LayerNorm over the last dimension (`(x - mean) / sqrt(var + eps)`, times a
/// weight, plus a bias).
#[derive(Debug, Clone)]
pub enum Norm {
    Rms(RmsNorm),
    Layer {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
    },
}

impl Norm {
    /// A LayerNorm without weight or bias (OLMo's) over `width` features: weight ones
    /// and bias zeros (exact: multiplying by 1 and adding 0 round to the same value).
    pub fn plain(width: usize, eps: f64, device: &candle_core::Device) -> Result<Self> {
        Ok(Self::Layer {
            weight: Tensor::ones(width, candle_core::DType::F32, device)?,
            bias: Tensor::zeros(width, candle_core::DType::F32, device)?,
            eps,
        })
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms(n) => n.forward(x),
            Norm::Layer { weight, bias, eps } => {
                candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, *eps as f32)
            }
        }
    }
}
