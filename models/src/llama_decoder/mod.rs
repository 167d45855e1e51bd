//! The Llama-like decoder, on candle's quantized matmul: llama.cpp's Llama-like GGUFs
//! (`llama` — Llama, Mistral, Mixtral — `qwen2`, `qwen3`, `phi3`, `glm4`) and the
//! transformers checkpoints of Llama, Mistral, Mixtral, Qwen2/3 and their MoE forms,
//! Helium, SmolLM3, Granite, OLMo and OLMo 2, Phi-2, Phi-3, GLM-4, Starcoder2, StableLM
//! and GPT-BigCode. Each architecture's file states its facts as [`LlamaOptions`];
//! the decoder never checks a name.
//!
//! Instead of candle-transformers 0.11.1's `quantized_llama` / `quantized_qwen2`, which
//! expand the token embedding to f32 (Qwen2.5: 519 MiB), keep rotary tables for the
//! whole context, ignore Llama 3.1's `rope_freqs` and read only the old per-expert
//! tensors of Mixtral: here the embedding stays quantized (rows dequantized on lookup,
//! reused as the tied output), one rotary table grows with the positions used, and both
//! expert layouts load.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Module, Tensor};
use zoo_core::source::GgufSource;
use zoo_core::{last_position_logits, Result};

mod batch;
mod build;
mod conv;
mod ffn;
mod load;
mod options;

pub(crate) use options::{LlamaOptions, Mlp, NormKind, Norms, QkNorm, Scales};
mod safetensors;

pub(crate) use batch::split_logits;

use conv::ShortConv;
use ffn::{expert_slice, mm, row_slice, Expert, Ffn, Shared};

use crate::adapters::{Decoded, Decoder};
use crate::layers::{
    last_position, merge_heads, split_heads, KvCache, Norm, PagedKv, QLinear, RmsNorm, RopeAt,
    RopeTable,
};

struct Layer {
    /// The norms before and after each branch, as the architecture places them.
    attn_norm: Option<Norm>,
    post_attn_norm: Option<Norm>,
    ffn_norm: Option<Norm>,
    post_ffn_norm: Option<Norm>,
    /// What mixes the positions: attention, or LFM2's short convolution.
    mixer: Mixer,
    /// The MLP reads the attention's input (Phi-2).
    parallel: bool,
    ffn: Ffn,
}

enum Mixer {
    Attention(Attention),
    Conv(ShortConv),
}

struct Attention {
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    /// Qwen3 normalises each head's q and k before the rotation.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    qk_norm: QkNorm,
    /// OLMo's `clip_qkv`: q, k and v clamped to `[-c, c]` after their projections.
    clip_qkv: Option<f64>,
    /// false: a NoPE layer (SmolLM3), whose q and k are not rotated.
    rotary: bool,
    cache: KvCache,
    /// The batched forward's share of the KV block store.
    paged: PagedKv,
}

pub(crate) use crate::layers::RopeLayout;

/// `norm(x)`, or `x` where there is no such norm.
fn norm_of(norm: &Option<Norm>, x: Tensor) -> Result<Tensor> {
    Ok(match norm {
        Some(n) => n.forward(&x)?,
        None => x,
    })
}

impl Attention {
    /// q, k and v of the branch input `n` in heads, q and k normalised as the
    /// architecture says; `rows` as in [`Expert::forward`].
    fn qkv(
        &self,
        n: &Tensor,
        (h, kvh, hd): (usize, usize, usize),
        rows: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let clip = |x: Tensor| -> Result<Tensor> {
            Ok(match self.clip_qkv {
                Some(c) => x.clamp(-c as f32, c as f32)?,
                None => x,
            })
        };
        let (mut q, mut k) = (clip(mm(&self.q, n, rows)?)?, clip(mm(&self.k, n, rows)?)?);
        let v = split_heads(&clip(mm(&self.v, n, rows)?)?, kvh, hd)?;
        let norms = self.q_norm.as_ref().zip(self.k_norm.as_ref());
        if let (QkNorm::Projection, Some((qn, kn))) = (self.qk_norm, norms) {
            (q, k) = (qn.forward(&q)?, kn.forward(&k)?);
        }
        let (mut q, mut k) = (split_heads(&q, h, hd)?, split_heads(&k, kvh, hd)?);
        if let (QkNorm::Heads, Some((qn, kn))) = (self.qk_norm, norms) {
            (q, k) = (qn.forward(&q)?, kn.forward(&k)?);
        }
        Ok((q, k, v))
    }
}

impl Layer {
    /// The attention branch's input.
    fn attn_input(&self, x: &Tensor) -> Result<Tensor> {
        norm_of(&self.attn_norm, x.clone())
    }

    /// `x` plus the mixer's output `a` and then the MLP branch, each scaled by `r` and
    /// normalised where the architecture says; in parallel, the MLP reads the mixer's
    /// input `n` instead.
    fn add_branches(&self, x: Tensor, n: &Tensor, a: Tensor, r: f64, rows: bool) -> Result<Tensor> {
        let a = norm_of(&self.post_attn_norm, a)?;
        if self.parallel {
            // `(attention + MLP) + residual`, in llama.cpp's and transformers' order.
            let f = norm_of(&self.post_ffn_norm, self.ffn.forward(n, rows)?)?;
            return Ok(((scaled(a, r)? + scaled(f, r)?)? + x)?);
        }
        let x = (x + scaled(a, r)?)?;
        let n = norm_of(&self.ffn_norm, x.clone())?;
        let f = norm_of(&self.post_ffn_norm, self.ffn.forward(&n, rows)?)?;
        Ok((x + scaled(f, r)?)?)
    }
}

/// `x * s`, or `x` itself when `s` is 1 (the other architectures' bits unchanged).
fn scaled(x: Tensor, s: f64) -> candle_core::Result<Tensor> {
    if s == 1.0 {
        Ok(x)
    } else {
        x.affine(s, 0.0)
    }
}

pub(crate) struct LlamaDecoder {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Norm,
    output: QLinear,
    rotary: Rotary,
    /// Learned position embeddings (`[positions, hidden]`), added to the tokens'.
    positions: Option<Tensor>,
    scales: Scales,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

fn qm(t: QTensor) -> Result<QLinear> {
    Ok(QLinear::new(Arc::new(t))?)
}

impl LlamaDecoder {
    /// The decoder of a GGUF file with the facts of its metadata: the body of an
    /// architecture built on it.
    pub(crate) fn load(
        g: &GgufSource,
        options: &LlamaOptions,
        device: &Device,
    ) -> Result<Decoded<Self>> {
        Decoded::from_gguf(g, device, || Self::from_gguf(g, options, device))
    }

    fn norm_device(&self) -> Device {
        self.embed.device().clone()
    }

    /// The vocabulary: rows of the output projection.
    fn output_rows(&self) -> usize {
        self.vocab
    }
}

/// The rotation of q and k: the table, the layout and how many features of a head turn.
struct Rotary {
    rope: RopeTable,
    layout: RopeLayout,
    /// The rotated features of each head: all of them, or the first few (GLM-4's
    /// partial rotary).
    dims: usize,
}

impl Rotary {
    /// `x` (`[batch, heads, seq, head_dim]`) rotated at positions `offset..` of one
    /// sequence.
    fn rotate(&mut self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (layout, rope) = (self.layout, &mut self.rope);
        rotate_part(x, self.dims, |first| match layout {
            RopeLayout::Interleaved => rope.apply_interleaved(first, offset),
            RopeLayout::Halves => rope.apply(first, offset),
        })
    }

    /// `x` (`[1, heads, tokens, head_dim]`) rotated at a batched step's positions, whose
    /// rows `at` holds.
    fn rotate_at(&self, x: &Tensor, at: &RopeAt) -> Result<Tensor> {
        rotate_part(x, self.dims, |first| match self.layout {
            RopeLayout::Interleaved => at.apply_interleaved(first),
            RopeLayout::Halves => at.apply(first),
        })
    }
}

/// `rotate` of the first `dims` features of each head of `x`, the others as they are
/// (GLM-4's partial rotary), or of all of them.
fn rotate_part(
    x: &Tensor,
    dims: usize,
    mut rotate: impl FnMut(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let hd = x.dim(3)?;
    if dims >= hd {
        return Ok(rotate(x)?);
    }
    let y = rotate(&x.narrow(3, 0, dims)?)?;
    let rest = x.narrow(3, dims, hd - dims)?;
    Ok(Tensor::cat(&[&y, &rest], 3)?)
}

impl Decoder for LlamaDecoder {
    fn forward(&mut self, input_ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let mut x = scaled(self.embed.embedding(input_ids)?, self.scales.embedding)?;
        if let Some(wpe) = &self.positions {
            let seq = input_ids.dim(1)?;
            let at = Tensor::arange(offset as u32, (offset + seq) as u32, wpe.device())?;
            x = x.broadcast_add(&wpe.index_select(&at, 0)?.unsqueeze(0)?)?;
        }
        let params = self.scales.attention(hd);
        for layer in &mut self.layers {
            let n = layer.attn_input(&x)?;
            let a = match &mut layer.mixer {
                Mixer::Conv(conv) => conv.forward(&n, offset)?,
                Mixer::Attention(att) => {
                    let (q, k, v) = att.qkv(&n, (h, kvh, hd), false)?;
                    let (q, k) = match att.rotary {
                        true => (
                            self.rotary.rotate(&q, offset)?,
                            self.rotary.rotate(&k, offset)?,
                        ),
                        false => (q, k),
                    };
                    let a = att.cache.attend(&q, &k, &v, offset, &params)?;
                    mm(&att.o, &merge_heads(&a)?, false)?
                }
            };
            x = layer.add_branches(x, &n, a, self.scales.residual, false)?;
        }
        let x = self.norm.forward(&last_position(&x)?)?;
        let logits = self.output.forward(&x)?;
        last_position_logits(scaled(logits, 1.0 / self.scales.logits)?)
    }

    fn reset(&mut self) {
        for layer in &mut self.layers {
            match &mut layer.mixer {
                Mixer::Attention(att) => att.cache.clear(),
                Mixer::Conv(conv) => conv.clear(),
            }
        }
    }
}

/// The load function of a GGUF architecture built on [`LlamaDecoder`] with its
/// options: `llama_gguf_load!(QuantizedQwen2, OPTIONS);`.
macro_rules! llama_gguf_load {
    ($ty:ident, $options:expr) => {
        impl $ty {
            fn load(g: &zoo_core::GgufSource, device: &zoo_core::Device) -> zoo_core::Result<Self> {
                $crate::llama_decoder::LlamaDecoder::load(g, &$options, device).map(Self)
            }
        }
    };
}
pub(crate) use llama_gguf_load;

/// `fn load(&SafetensorsSource, &Device) -> Result<Self>` for a transformers checkpoint
/// on this decoder (`LlamaDecoder::from_safetensors`), with the context length
/// transformers' config class documents for a config.json without one.
///
/// `window_limits_context`: the architecture has a sliding window this decoder does not
/// mask (Mistral 7B v0.1's 4096): the context is cut to it, so that a longer sequence is
/// refused rather than computed without the window (within it, windowed and full
/// attention agree).
macro_rules! llama_safetensors_load {
    ($ty:ident, $options:expr, default_context = $context:expr) => {
        $crate::llama_decoder::llama_safetensors_load!(
            $ty,
            $options,
            default_context = $context,
            window = false,
            names = None
        );
    };
    ($ty:ident, $options:expr, default_context = $context:expr, window_limits_context) => {
        $crate::llama_decoder::llama_safetensors_load!(
            $ty,
            $options,
            default_context = $context,
            window = true,
            names = None
        );
    };
    ($ty:ident, $options:expr, default_context = $context:expr, names = $names:expr) => {
        $crate::llama_decoder::llama_safetensors_load!(
            $ty,
            $options,
            default_context = $context,
            window = false,
            names = Some($names)
        );
    };
    ($ty:ident, $options:expr, default_context = $context:expr, window_limits_context, names = $names:expr) => {
        $crate::llama_decoder::llama_safetensors_load!(
            $ty,
            $options,
            default_context = $context,
            window = true,
            names = Some($names)
        );
    };
    ($ty:ident, $options:expr, default_context = $context:expr, window = $window:expr, names = $names:expr) => {
        impl $ty {
            fn load(
                src: &zoo_core::SafetensorsSource,
                device: &zoo_core::Device,
            ) -> zoo_core::Result<Self> {
                let name = <Self as zoo_core::registry::Registered>::ENTRY.name;
                let mut info = src.model_info(name, Some($context), device)?;
                if let Some(w) = src.config["sliding_window"].as_u64().filter(|_| $window) {
                    info.context_length = info.context_length.min(w as usize);
                }
                let decoder = $crate::llama_decoder::LlamaDecoder::from_safetensors(
                    src, &$options, name, $names, device,
                )?;
                Ok(Self($crate::adapters::Decoded { decoder, info }))
            }
        }
    };
}
pub(crate) use llama_safetensors_load;
