//! The batched forward of [`LlamaDecoder`](super::LlamaDecoder) ([`BatchedLM`]): a
//! step's chunks as one sequence of rows, every product row by row
//! ([`crate::layers::QLinear::forward_rows`]), rotations at each token's position, and
//! attention (or LFM2's convolution) over each sequence's blocks. A step runs whole,
//! each operation split over the pool, or as groups of sequences side by side, one per
//! thread, when they come out even ([`crate::layers::split`]); a sequence's bits are
//! the same either way.

use candle_core::{DType, Module, Tensor};
use zoo_core::{BatchedLM, KvShape, Result, SeqChunk};

use super::{mm, scaled, Layer, LlamaDecoder, Mixer};
use crate::layers::split::{self, StepCost};
use crate::layers::{merge_heads, PagedKv, RopeAt, StepLayout};

impl BatchedLM for LlamaDecoder {
    fn kv_shape(&self) -> KvShape {
        let conv = |l: &Layer| match &l.mixer {
            Mixer::Conv(c) => Some(c.hidden),
            Mixer::Attention(_) => None,
        };
        KvShape {
            layers: self.layers.iter().filter(|l| conv(l).is_none()).count(),
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            other_values: self.layers.iter().filter_map(conv).sum(),
            bytes_per_value: 4,
        }
    }

    fn allocate_kv(&mut self, blocks: usize, block_size: usize) -> Result<()> {
        for layer in &mut self.layers {
            match &mut layer.mixer {
                Mixer::Attention(att) => {
                    att.paged = PagedKv::default(); // the old store goes before the new comes
                    att.paged = PagedKv::new(blocks, block_size, self.kv_heads, self.head_dim)?;
                }
                Mixer::Conv(conv) => conv.allocate(blocks, block_size)?,
            }
        }
        Ok(())
    }

    fn forward_batch(&mut self, chunks: &[SeqChunk<'_>]) -> Result<Vec<Tensor>> {
        let groups = split::groups(chunks, &self.step_cost(), self.block_size());
        // Each group's rotary rows, the table grown to reach them.
        let mut parts = Vec::with_capacity(groups.len());
        for g in groups {
            let layout = StepLayout::new(&chunks[g]);
            let rope = self.rotary.rope.at(&layout.position)?;
            parts.push((layout, rope));
        }
        let this = &*self;
        // SAFETY: one group while `&mut self` is held, or `split::plan`'s groups, which
        // touch none of each other's blocks.
        split::run(&parts, |(layout, rope)| unsafe { this.step(layout, rope) })
    }
}

impl LlamaDecoder {
    /// The block size the stores were allocated with (0 before).
    fn block_size(&self) -> usize {
        self.layers.first().map_or(0, |l| match &l.mixer {
            Mixer::Attention(att) => att.paged.block_size(),
            Mixer::Conv(conv) => conv.block_size(),
        })
    }

    /// What a step's rows and positions cost, for [`split::plan`].
    fn step_cost(&self) -> StepCost {
        let layer_values = |l: &Layer| {
            l.ffn.values()
                + match &l.mixer {
                    Mixer::Attention(a) => {
                        a.q.values() + a.k.values() + a.v.values() + a.o.values()
                    }
                    Mixer::Conv(c) => c.in_proj.values() + c.out_proj.values(),
                }
        };
        let weights = self.layers.iter().map(layer_values).sum::<usize>() + self.output.values();
        let attention_layers = self
            .layers
            .iter()
            .filter(|l| matches!(l.mixer, Mixer::Attention(_)))
            .count();
        StepCost::new(weights, (attention_layers, self.heads, self.head_dim))
    }

    /// The forward of one group of a step (`layout`'s chunks, `rope` the rows of their
    /// positions): the logits each chunk asks for.
    ///
    /// # Safety
    ///
    /// As [`PagedKv::attend_shared`]: no other thread writes a block these chunks read,
    /// nor touches a block they write.
    unsafe fn step(&self, layout: &StepLayout, rope: &RopeAt) -> Result<Vec<Tensor>> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let chunks = layout.chunks;
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
        if let Some(wpe) = &self.positions {
            let at: Vec<u32> = layout.position.iter().map(|&p| p as u32).collect();
            let at = Tensor::new(at.as_slice(), wpe.device())?;
            x = x.broadcast_add(&wpe.index_select(&at, 0)?.unsqueeze(0)?)?;
        }
        let params = self.scales.attention(hd);
        for layer in &self.layers {
            let n = layer.attn_input(&x)?;
            let a = match &layer.mixer {
                // SAFETY: the caller's contract, as for the attention below.
                Mixer::Conv(conv) => unsafe { conv.forward_batch(&n, layout)? },
                Mixer::Attention(att) => {
                    let (q, k, v) = att.qkv(&n, (h, kvh, hd), true)?;
                    let (q, k) = match att.rotary {
                        true => (
                            self.rotary.rotate_at(&q, rope)?,
                            self.rotary.rotate_at(&k, rope)?,
                        ),
                        false => (q, k),
                    };
                    // SAFETY: the caller's contract.
                    let a = unsafe { att.paged.attend_shared(layout, &q, &k, &v, &params)? };
                    mm(&att.o, &merge_heads(&a)?, true)?
                }
            };
            x = layer.add_branches(x, &n, a, self.scales.residual, true)?;
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
