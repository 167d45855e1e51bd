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
    /// Positions past the context are refused here too, not only by the callers that
    /// check (generate, the engine): a decoder computes them without complaint, wrongly
    /// where the context stands for a window it does not mask.
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        let end = seqlen_offset + input_ids.dim(candle_core::D::Minus1)?;
        if end > self.info.context_length {
            return Err(zoo_core::Error::PromptTooLong {
                prompt_tokens: end,
                context_length: self.info.context_length,
            });
        }
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
///
/// The values are copied out of the memory map 8 MiB at a time, and the map's pages
/// given back after each piece: resident memory holds the copy, not the copy plus the
/// file (a 335 MB embedding would otherwise count twice while it loads).
pub fn stored_half(
    st: &candle_core::safetensors::MmapedSafetensors,
    name: &str,
    device: &Device,
) -> Result<Option<candle_core::quantized::QTensor>> {
    use candle_core::quantized::{QStorage, QTensor};
    let view = st.get(name)?;
    if !device.is_cpu() || view.shape().len() != 2 {
        return Ok(None);
    }
    let data = view.data();
    let storage = match view.dtype() {
        safetensors::Dtype::BF16 => {
            QStorage::Cpu(Box::new(copy_halves(data, half::bf16::from_bits)))
        }
        safetensors::Dtype::F16 => QStorage::Cpu(Box::new(copy_halves(data, half::f16::from_bits))),
        _ => return Ok(None),
    };
    Ok(Some(QTensor::new(storage, view.shape())?))
}

/// `data` (little-endian pairs) as values of a half type, read a piece at a time with
/// each piece's pages of the map released after it.
fn copy_halves<T: Copy + Default>(data: &[u8], from_bits: fn(u16) -> T) -> Vec<T> {
    const PIECE: usize = 8 << 20;
    let mut out = vec![T::default(); data.len() / 2];
    for (src, dst) in data.chunks(PIECE).zip(out.chunks_mut(PIECE / 2)) {
        for (b, o) in src.chunks_exact(2).zip(dst.iter_mut()) {
            *o = from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        release_pages(src);
    }
    out
}

/// Gives back the whole pages of a read-only file mapping that `bytes` covers (the
/// kernel reads them again from the file should anything touch them later).
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if start < end {
            // SAFETY: [start, end) lies within `bytes`, part of a shared read-only
            // mapping of a file that stays mapped; MADV_DONTNEED drops this process's
            // references to those pages, and a later read faults the same file contents
            // back in, so no reader can observe a difference.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// transformers' name of the tensor llama.cpp calls `name` (`blk.3.attn_q.weight` is
/// `model.layers.3.self_attn.q_proj.weight`), for the parts Llama-like architectures
/// name alike; `norms` maps the layer norms, which each architecture names its own way
/// (llama.cpp's `attn_norm` is Llama's `input_layernorm`, its `ffn_norm` Llama's
/// `post_attention_layernorm` but Gemma's `pre_feedforward_layernorm`). Experts are named
/// as transformers' Qwen MoE models name them (`mlp.gate`, `mlp.experts.{e}.up_proj`,
/// `mlp.shared_expert.up_proj`, `mlp.shared_expert_gate`); Mixtral names its own.
pub fn transformers_name(name: &str, norms: &[(&str, &str)]) -> String {
    let top = |stem: &str| match stem {
        "token_embd" => Some("model.embed_tokens"),
        "output" => Some("lm_head"),
        "output_norm" => Some("model.norm"),
        _ => None,
    };
    if let Some((stem, suffix)) = name.split_once('.') {
        if let Some(theirs) = top(stem) {
            return format!("{theirs}.{suffix}");
        }
    }
    let Some((block, rest)) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
        return name.into();
    };
    let (stem, suffix) = rest.rsplit_once('.').unwrap_or((rest, "weight"));
    if let Some((ffn, expert)) = stem.split_once('.') {
        let proj = match ffn {
            "ffn_gate" => "gate_proj",
            "ffn_up" => "up_proj",
            "ffn_down" => "down_proj",
            _ => return name.into(),
        };
        return format!("model.layers.{block}.mlp.experts.{expert}.{proj}.{suffix}");
    }
    let stem = match stem {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_gate_inp" => "mlp.gate",
        "ffn_gate_shexp" => "mlp.shared_expert.gate_proj",
        "ffn_up_shexp" => "mlp.shared_expert.up_proj",
        "ffn_down_shexp" => "mlp.shared_expert.down_proj",
        "ffn_gate_inp_shexp" => "mlp.shared_expert_gate",
        other => norms
            .iter()
            .find(|(ours, _)| *ours == other)
            .map_or(other, |(_, theirs)| theirs),
    };
    format!("model.layers.{block}.{stem}.{suffix}")
}
