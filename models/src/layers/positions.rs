//! Where a forward pass's tokens sit ([`Positions`]: one sequence from an offset, or a
//! batched step), a layer's keys and values for both kinds of step ([`LayerKv`]), and
//! `positions_lm!`, which derives `CausalLM` and `BatchedLM` for a model file that
//! writes its forward once over them.

use candle_core::{Result, Tensor};

use super::{AttnParams, PagedKv, StepLayout};

/// Where a forward pass's tokens sit: one sequence from an offset (the contiguous
/// [`super::KvCache`]), or a batched step ([`StepLayout`], the block store). A decoder
/// written once over it serves both [`zoo_core::CausalLM::forward`] and
/// [`zoo_core::BatchedLM::forward_batch`].
#[derive(Clone, Copy)]
pub enum Positions<'a> {
    From(usize),
    Batch(&'a StepLayout<'a>),
}

impl Positions<'_> {
    /// The product: [`super::QLinear::forward_rows`] in a batched step (row-invariant),
    /// the usual one otherwise.
    pub fn linear(&self, l: &super::QLinear, x: &Tensor) -> Result<Tensor> {
        match self {
            Positions::From(_) => candle_core::Module::forward(l, x),
            Positions::Batch(_) => l.forward_rows(x),
        }
    }

    /// NeoX-style rotation of `[1 or batch, heads, tokens, head_dim]` at these positions.
    pub fn rope(&self, table: &mut super::RopeTable, x: &Tensor) -> Result<Tensor> {
        match self {
            Positions::From(offset) => table.apply(x, *offset),
            Positions::Batch(layout) => table.apply_at(x, &layout.position),
        }
    }

    /// As [`Positions::rope`] with GPT-J's interleaved pairs.
    pub fn rope_interleaved(&self, table: &mut super::RopeTable, x: &Tensor) -> Result<Tensor> {
        match self {
            Positions::From(offset) => table.apply_interleaved(x, *offset),
            Positions::Batch(layout) => table.apply_interleaved_at(x, &layout.position),
        }
    }

    /// Rotates the first `rotary` features of each head of `x` in `layout`'s pairing
    /// and passes the rest through (partial rotary: Phi, GLM-4).
    pub fn rope_partial(
        &self,
        table: &mut super::RopeTable,
        x: &Tensor,
        rotary: usize,
        layout: super::RopeLayout,
    ) -> Result<Tensor> {
        let head_dim = x.dim(3)?;
        let first = x.narrow(3, 0, rotary)?;
        let rot = match layout {
            super::RopeLayout::Interleaved => self.rope_interleaved(table, &first)?,
            super::RopeLayout::Halves => self.rope(table, &first)?,
        };
        if rotary == head_dim {
            return Ok(rot);
        }
        Tensor::cat(&[&rot, &x.narrow(3, rotary, head_dim - rotary)?], 3)
    }
}

/// A layer's keys and values for both kinds of step.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    pub cache: super::KvCache,
    pub paged: PagedKv,
}

impl LayerKv {
    /// Appends this step's keys and values and attends over the sequence's positions.
    pub fn attend(
        &mut self,
        at: &Positions,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttnParams,
    ) -> Result<Tensor> {
        match at {
            Positions::From(offset) => self.cache.attend(q, k, v, *offset, p),
            Positions::Batch(layout) => self.paged.attend(layout, q, k, v, p),
        }
    }
}

/// `CausalLM` (with `batched`) and `BatchedLM` for a model file that writes its
/// forward once over [`Positions`]: a struct with `layers` (each with `kv:` [`LayerKv`]),
/// `kv_heads`, `head_dim`, `info: ModelInfo`, `norm`, `output: QLinear`, and a method
/// `hidden(&mut self, ids, Positions) -> Result<Tensor>` giving the last layer's hidden
/// states. The single-sequence forward takes the last position; the batched one the
/// rows the chunks ask for, through [`super::QLinear::forward_rows`].
macro_rules! positions_lm {
    ($ty:ty) => {
        impl zoo_core::CausalLM for $ty {
            fn forward(
                &mut self,
                input_ids: &candle_core::Tensor,
                seqlen_offset: usize,
            ) -> zoo_core::Result<candle_core::Tensor> {
                use candle_core::Module;
                let x = self.hidden(input_ids, $crate::layers::Positions::From(seqlen_offset))?;
                let x = self.norm.forward(&$crate::layers::last_position(&x)?)?;
                zoo_core::last_position_logits(self.output.forward(&x)?)
            }

            fn reset_cache(&mut self) -> zoo_core::Result<()> {
                for layer in &mut self.layers {
                    layer.kv.cache.clear();
                }
                Ok(())
            }

            fn batched(&mut self) -> Option<&mut dyn zoo_core::BatchedLM> {
                Some(self)
            }

            zoo_core::causal_lm_info!(info);
        }

        impl zoo_core::BatchedLM for $ty {
            fn kv_shape(&self) -> zoo_core::KvShape {
                zoo_core::KvShape {
                    layers: self.layers.len(),
                    kv_heads: self.kv_heads,
                    head_dim: self.head_dim,
                    bytes_per_value: 4,
                }
            }

            fn allocate_kv(&mut self, blocks: usize, block_size: usize) -> zoo_core::Result<()> {
                for layer in &mut self.layers {
                    // The old store goes before the new comes.
                    layer.kv.paged = $crate::layers::PagedKv::default();
                    layer.kv.paged = $crate::layers::PagedKv::new(
                        blocks,
                        block_size,
                        self.kv_heads,
                        self.head_dim,
                    )?;
                }
                Ok(())
            }

            fn forward_batch(
                &mut self,
                chunks: &[zoo_core::SeqChunk<'_>],
            ) -> zoo_core::Result<Vec<candle_core::Tensor>> {
                use candle_core::{DType, Module, Tensor};
                let layout = $crate::layers::StepLayout::new(chunks);
                let device = self.info.device.clone();
                let rows = layout.logit_rows();
                let ids = Tensor::new(layout.tokens().as_slice(), &device)?.unsqueeze(0)?;
                let x = match layout.position.is_empty() {
                    true => None,
                    false => Some(self.hidden(&ids, $crate::layers::Positions::Batch(&layout))?),
                };
                let logits = match x {
                    Some(x) if !rows.is_empty() => {
                        let idx = Tensor::new(rows.as_slice(), &device)?;
                        let x = self.norm.forward(&x.squeeze(0)?.index_select(&idx, 0)?)?;
                        self.output.forward_rows(&x)?.to_dtype(DType::F32)?
                    }
                    _ => Tensor::zeros((0, self.info.vocab_size), DType::F32, &device)?,
                };
                $crate::llama_decoder::split_logits(chunks, &logits)
            }
        }
    };
}
pub(crate) use positions_lm;
