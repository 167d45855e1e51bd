//! The decoder of llama.cpp's Llama-like GGUFs (`llama` — Llama, Mistral, Mixtral —
//! `qwen2` and `qwen3`), shared by their files, on candle's quantized matmul.
//!
//! Instead of candle-transformers 0.11.1's `quantized_llama` / `quantized_qwen2`, which
//! expand the token embedding to f32 (Qwen2.5: 519 MiB), keep rotary tables for the
//! whole context, ignore Llama 3.1's `rope_freqs` and read only the old per-expert
//! tensors of Mixtral: here the embedding stays quantized (rows dequantized on lookup,
//! reused as the tied output), one rotary table grows with the positions used, and both
//! expert layouts load.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use zoo_core::source::GgufSource;
use zoo_core::{last_position_logits, BatchedLM, KvShape, Result, SeqChunk};

mod load;
mod safetensors;

use crate::adapters::{Decoded, Decoder};
use crate::layers::{
    last_position, merge_heads, split_heads, AttnParams, KvCache, PagedKv, QLinear, RmsNorm,
    RopeTable, StepLayout,
};

struct Expert {
    gate: QLinear,
    up: QLinear,
    down: QLinear,
}

impl Expert {
    /// `rows`: each row's product alone ([`QLinear::forward_rows`], the batched forward).
    fn forward(&self, x: &Tensor, rows: bool) -> Result<Tensor> {
        let h = (candle_nn::ops::silu(&mm(&self.gate, x, rows)?)? * mm(&self.up, x, rows)?)?;
        Ok(mm(&self.down, &h, rows)?)
    }
}

enum Ffn {
    Dense(Expert),
    /// Softmax over the router's logits, the top `used` experts, with `norm_topk` their
    /// weights renormalised to sum to one (Mixtral; a Qwen MoE config's
    /// `norm_topk_prob`); a shared expert's output added, gated by a sigmoid (Qwen2-MoE).
    Moe {
        router: QLinear,
        experts: Vec<Expert>,
        used: usize,
        norm_topk: bool,
        shared: Option<Shared>,
    },
}

/// The expert every token goes through, scaled by `sigmoid(gate(x))`.
struct Shared {
    expert: Expert,
    gate: QLinear,
}

struct Layer {
    attn_norm: RmsNorm,
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    /// Qwen3 normalises each head's q and k before the rotation.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// false: a NoPE layer (SmolLM3), whose q and k are not rotated.
    rotary: bool,
    ffn_norm: RmsNorm,
    ffn: Ffn,
    cache: KvCache,
    /// The batched forward's share of the KV block store.
    paged: PagedKv,
}

pub(crate) use crate::layers::RopeLayout;

/// Granite's multipliers: of the embedding, of q.k (in place of `1/sqrt(head_dim)`), of
/// each residual branch, and the divisor of the logits. [`Scales::NONE`] elsewhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scales {
    pub embedding: f64,
    pub attention: Option<f64>,
    pub residual: f64,
    pub logits: f64,
}

impl Scales {
    pub const NONE: Scales = Scales {
        embedding: 1.0,
        attention: None,
        residual: 1.0,
        logits: 1.0,
    };

    fn attention(&self, head_dim: usize) -> AttnParams {
        match self.attention {
            Some(s) => AttnParams::causal(s),
            None => AttnParams::for_head_dim(head_dim),
        }
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

/// The facts of an architecture built on [`LlamaDecoder`], stated by its file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LlamaOptions {
    /// The GGUF form's q/k layout (llama.cpp's converter permutes some architectures into
    /// pairs).
    pub rope: RopeLayout,
    /// The safetensors form's: transformers' `rotate_half`, NeoX halves in all but a few
    /// architectures (Helium's interleaves).
    pub hf_rope: RopeLayout,
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// RMS norms of each head's q and k before the rotation (Qwen3).
    pub qk_norm: bool,
    /// The `rope.freq_base` transformers' config class documents, for files without one.
    pub default_rope_base: f64,
    /// config.json's `embedding_multiplier`, `attention_multiplier`,
    /// `residual_multiplier` and `logits_scaling` (Granite), each 1 when omitted.
    pub multipliers: bool,
    /// A shared expert beside the routed ones (Qwen2-MoE's `shared_expert`).
    pub shared_expert: bool,
    /// config.json's `no_rope_layers` (SmolLM3): the layers marked 0 rotate neither q
    /// nor k; without the list, every `no_rope_layer_interval`-th layer.
    pub nope_layers: bool,
    /// Other defaults of transformers' config class that differ from Llama's, as JSON,
    /// for a config.json that omits the key (`("head_dim", "128")`).
    pub config_defaults: &'static [(&'static str, &'static str)],
}

impl LlamaOptions {
    /// Llama's facts, which a file built on this decoder states only where it differs:
    /// llama.cpp's `llama` converter permutes q/k into GPT-J pairs; no biases or q/k
    /// norms; transformers' LlamaConfig rope default.
    pub const LLAMA: LlamaOptions = LlamaOptions {
        rope: RopeLayout::Interleaved,
        hf_rope: RopeLayout::Halves,
        qkv_bias: false,
        qk_norm: false,
        default_rope_base: 10_000.0,
        multipliers: false,
        shared_expert: false,
        nope_layers: false,
        config_defaults: &[],
    };
}

pub(crate) struct LlamaDecoder {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QLinear,
    rope: RopeTable,
    rope_layout: RopeLayout,
    scales: Scales,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

/// Expert `e` of a stacked `[experts, rows, cols]` tensor, as its own 2-D tensor.
fn expert_slice(t: &QTensor, e: usize, device: &Device) -> Result<QTensor> {
    let (n, rows, cols) = t.shape().dims3()?;
    let data = t.data()?;
    let per = data.len() / n;
    let storage = QStorage::from_data(
        Cow::Borrowed(&data[e * per..(e + 1) * per]),
        device,
        t.dtype(),
    )?;
    Ok(QTensor::new(storage, (rows, cols))?)
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

    fn rotate(&mut self, x: &Tensor, offset: usize) -> Result<Tensor> {
        Ok(match self.rope_layout {
            RopeLayout::Interleaved => self.rope.apply_interleaved(x, offset)?,
            RopeLayout::Halves => self.rope.apply(x, offset)?,
        })
    }
}

impl Decoder for LlamaDecoder {
    fn forward(&mut self, input_ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let mut x = scaled(self.embed.embedding(input_ids)?, self.scales.embedding)?;
        let params = self.scales.attention(hd);
        for i in 0..self.layers.len() {
            let n = self.layers[i].attn_norm.forward(&x)?;
            let q = split_heads(&self.layers[i].q.forward(&n)?, h, hd)?;
            let k = split_heads(&self.layers[i].k.forward(&n)?, kvh, hd)?;
            let v = split_heads(&self.layers[i].v.forward(&n)?, kvh, hd)?;
            let (q, k) = match (&self.layers[i].q_norm, &self.layers[i].k_norm) {
                (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
                _ => (q, k),
            };
            let (q, k) = if self.layers[i].rotary {
                (self.rotate(&q, offset)?, self.rotate(&k, offset)?)
            } else {
                (q, k)
            };
            let layer = &mut self.layers[i];
            let a = layer.cache.attend(&q, &k, &v, offset, &params)?;
            let r = self.scales.residual;
            x = (x + scaled(layer.o.forward(&merge_heads(&a)?)?, r)?)?;
            x = (&x + scaled(layer.ffn.forward(&layer.ffn_norm.forward(&x)?, false)?, r)?)?;
        }
        let x = self.norm.forward(&last_position(&x)?)?;
        let logits = self.output.forward(&x)?;
        last_position_logits(scaled(logits, 1.0 / self.scales.logits)?)
    }

    fn reset(&mut self) {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
    }
}

impl Ffn {
    /// The feed-forward of `x` (`[batch, seq, hidden]`); `rows` as in [`Expert::forward`].
    fn forward(&self, x: &Tensor, rows: bool) -> Result<Tensor> {
        match self {
            Ffn::Dense(e) => e.forward(x, rows),
            Ffn::Moe {
                router,
                experts,
                used,
                norm_topk,
                shared,
            } => {
                let (b, s, hidden) = x.dims3()?;
                let x = x.reshape((b * s, hidden))?;
                let mut out = moe(router, experts, *used, *norm_topk, &x, rows)?;
                if let Some(Shared { expert, gate }) = shared {
                    let g = candle_nn::ops::sigmoid(&mm(gate, &x, rows)?)?;
                    out = (out + expert.forward(&x, rows)?.broadcast_mul(&g)?)?;
                }
                Ok(out.reshape((b, s, hidden))?)
            }
        }
    }
}

impl BatchedLM for LlamaDecoder {
    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.layers.len(),
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            bytes_per_value: 4,
        }
    }

    fn allocate_kv(&mut self, blocks: usize, block_size: usize) -> Result<()> {
        for layer in &mut self.layers {
            layer.paged = PagedKv::default(); // the old store goes before the new comes
            layer.paged = PagedKv::new(blocks, block_size, self.kv_heads, self.head_dim)?;
        }
        Ok(())
    }

    /// The forward above over all chunks' tokens as one sequence of rows, every product
    /// row by row ([`QLinear::forward_rows`]), rotations at each token's position, and
    /// attention over each sequence's blocks ([`PagedKv`]).
    fn forward_batch(&mut self, chunks: &[SeqChunk<'_>]) -> Result<Vec<Tensor>> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let layout = StepLayout::new(chunks);
        let device = self.norm_device();
        let vocab = self.output_rows();
        if layout.position.is_empty() {
            return Ok(chunks
                .iter()
                .map(|_| Tensor::zeros((0, vocab), DType::F32, &device))
                .collect::<candle_core::Result<_>>()?);
        }
        let ids = Tensor::new(layout.tokens().as_slice(), &device)?.unsqueeze(0)?;
        let mut x = scaled(self.embed.embedding(&ids)?, self.scales.embedding)?;
        let params = self.scales.attention(hd);
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            let n = layer.attn_norm.forward(&x)?;
            let q = split_heads(&layer.q.forward_rows(&n)?, h, hd)?;
            let k = split_heads(&layer.k.forward_rows(&n)?, kvh, hd)?;
            let v = split_heads(&layer.v.forward_rows(&n)?, kvh, hd)?;
            let (q, k) = match (&layer.q_norm, &layer.k_norm) {
                (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
                _ => (q, k),
            };
            let (q, k) = match self.rope_layout {
                _ if !layer.rotary => (q, k),
                RopeLayout::Interleaved => (
                    self.rope.apply_interleaved_at(&q, &layout.position)?,
                    self.rope.apply_interleaved_at(&k, &layout.position)?,
                ),
                RopeLayout::Halves => (
                    self.rope.apply_at(&q, &layout.position)?,
                    self.rope.apply_at(&k, &layout.position)?,
                ),
            };
            let layer = &mut self.layers[i];
            let a = layer.paged.attend(&layout, &q, &k, &v, &params)?;
            let r = self.scales.residual;
            x = (x + scaled(layer.o.forward_rows(&merge_heads(&a)?)?, r)?)?;
            x = (&x + scaled(layer.ffn.forward(&layer.ffn_norm.forward(&x)?, true)?, r)?)?;
        }
        let rows = layout.logit_rows();
        let logits = if rows.is_empty() {
            Tensor::zeros((0, vocab), DType::F32, &device)?
        } else {
            let idx = Tensor::new(rows.as_slice(), &device)?;
            let x = self.norm.forward(&x.squeeze(0)?.index_select(&idx, 0)?)?;
            let logits = self.output.forward_rows(&x)?.to_dtype(DType::F32)?;
            scaled(logits, 1.0 / self.scales.logits)?
        };
        split_logits(chunks, &logits)
    }
}

/// The rows of `logits` (every chunk's rows, in chunk order) cut back per chunk.
pub(crate) fn split_logits(chunks: &[SeqChunk<'_>], logits: &Tensor) -> Result<Vec<Tensor>> {
    let mut start = 0;
    let mut out = Vec::with_capacity(chunks.len());
    for c in chunks {
        let n = c.logits.rows(c.tokens.len());
        out.push(logits.narrow(0, start, n)?);
        start += n;
    }
    Ok(out)
}

/// The sparse feed-forward of `x` (`[tokens, hidden]`); `rows` as in [`Expert::forward`]
/// (a token's result never depends on the others routed with it: each expert's
/// contributions are added in expert order).
/// `l(x)`; `rows` as in [`Expert::forward`].
fn mm(l: &QLinear, x: &Tensor, rows: bool) -> candle_core::Result<Tensor> {
    if rows {
        l.forward_rows(x)
    } else {
        l.forward(x)
    }
}

fn moe(
    router: &QLinear,
    experts: &[Expert],
    k: usize,
    norm_topk: bool,
    x: &Tensor,
    rows: bool,
) -> Result<Tensor> {
    let logits = mm(router, x, rows)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?;
    let probs: Vec<Vec<f32>> = probs.to_dtype(DType::F32)?.to_vec2()?;
    // For each expert, the tokens routed to it and their renormalised weights.
    let mut routed: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); experts.len()];
    for (t, p) in probs.iter().enumerate() {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let top = &order[..k];
        let sum: f32 = top.iter().map(|&e| p[e]).sum();
        for &e in top {
            routed[e].0.push(t as u32);
            routed[e].1.push(if norm_topk { p[e] / sum } else { p[e] });
        }
    }
    let mut out = x.zeros_like()?;
    for (expert, (tokens, weights)) in experts.iter().zip(routed) {
        if tokens.is_empty() {
            continue;
        }
        let idx = Tensor::new(tokens.as_slice(), x.device())?;
        let y = expert.forward(&x.index_select(&idx, 0)?, rows)?;
        let w = Tensor::new(weights.as_slice(), x.device())?.unsqueeze(D::Minus1)?;
        out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
    }
    Ok(out)
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
