//! [`Decoded`]: one of zoo's decoders with the facts read at load.

use candle_core::Tensor;
use zoo_core::{BatchedLM, Device, GgufSource, ModelBody, ModelInfo, Result};

/// What zoo's decoders (`LlamaDecoder`, `GemmaDecoder`) do: a forward pass that
/// returns the last position's f32 logits, a cache that a reset empties, and the
/// batched forward over KV blocks.
pub trait Decoder: BatchedLM + Send {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor>;
    fn reset(&mut self);
}

/// A decoder with the facts read at load: the body of an architecture built on it.
pub struct Decoded<D> {
    pub decoder: D,
    pub info: ModelInfo,
}

impl<D> Decoded<D> {
    /// The decoder of a GGUF file with the facts of its metadata
    /// (`tokenizer.ggml.*`, `<arch>.context_length`).
    pub fn from_gguf(
        g: &GgufSource,
        device: &Device,
        decoder: impl FnOnce() -> Result<D>,
    ) -> Result<Self> {
        let info = ModelInfo::from_gguf(g, device)?;
        Ok(Self {
            decoder: decoder()?,
            info,
        })
    }
}

impl<D: Decoder> ModelBody for Decoded<D> {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn batched(&mut self) -> Option<&mut dyn BatchedLM> {
        Some(&mut self.decoder)
    }
}

/// A safetensors matrix kept in its stored half precision (bf16 or f16: 2 bytes per
/// value, computed by [`crate::layers::QLinear`]'s half-precision product), or `None`
/// for another dtype, shape or device (the caller widens it to f32 as before).
pub fn stored_half(
    st: &candle_core::safetensors::MmapedSafetensors,
    name: &str,
    device: &Device,
) -> Result<Option<candle_core::quantized::QTensor>> {
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    let view = st.get(name)?;
    let ty = match view.dtype() {
        safetensors::Dtype::BF16 => GgmlDType::BF16,
        safetensors::Dtype::F16 => GgmlDType::F16,
        _ => return Ok(None),
    };
    if !device.is_cpu() || view.shape().len() != 2 {
        return Ok(None);
    }
    let storage = QStorage::from_data(std::borrow::Cow::Borrowed(view.data()), device, ty)?;
    Ok(Some(QTensor::new(storage, view.shape())?))
}
