//! The KV cache as blocks shared by every sequence of a batched step
//! ([`zoo_core::BatchedLM`]): one store per layer, values `[block][kv_head][slot]
//! [head_dim]` f32 and keys `[block][kv_head][head_dim][slot]` (a block is one key
//! tile of `group_attn.rs`), written where each sequence's block table says and
//! attended over in position order with the arithmetic of `group_attn.rs`, so a
//! query's result does not depend on the block layout, the chunking or the other
//! sequences of the step.

use candle_core::{Result, Tensor};
use zoo_core::SeqChunk;

use super::attention::ungroup;
use super::group_attn::{attend_group, KeyTile};
use super::AttnParams;
use crate::par::{par_chunks_mut, SharedCells};

/// Where each token of a batched step sits: its chunk and its position.
pub struct StepLayout<'a> {
    pub chunks: &'a [SeqChunk<'a>],
    /// Per token of the step (chunks one after the other): its chunk index.
    pub chunk_of: Vec<usize>,
    /// Per token: its position in its sequence.
    pub position: Vec<usize>,
}

impl<'a> StepLayout<'a> {
    pub fn new(chunks: &'a [SeqChunk<'a>]) -> Self {
        let mut chunk_of = Vec::new();
        let mut position = Vec::new();
        for (c, chunk) in chunks.iter().enumerate() {
            for i in 0..chunk.tokens.len() {
                chunk_of.push(c);
                position.push(chunk.offset + i);
            }
        }
        Self {
            chunks,
            chunk_of,
            position,
        }
    }

    /// An error unless every chunk's block table covers its positions with blocks of a
    /// store of `blocks` blocks of `block_size` positions.
    pub fn check_tables(&self, blocks: usize, block_size: usize) -> Result<()> {
        if blocks == 0 {
            candle_core::bail!("the KV block store is not allocated (BatchedLM::allocate_kv)");
        }
        for c in self.chunks {
            let end = c.offset + c.tokens.len();
            let need = end.div_ceil(block_size);
            if c.blocks.len() < need || c.blocks.iter().any(|&b| b as usize >= blocks) {
                candle_core::bail!(
                    "a sequence up to position {end} needs {need} blocks below {blocks}; its table is {:?}",
                    c.blocks
                );
            }
        }
        Ok(())
    }

    /// All tokens of the step, chunk after chunk.
    pub fn tokens(&self) -> Vec<u32> {
        self.chunks
            .iter()
            .flat_map(|c| c.tokens.iter().copied())
            .collect()
    }

    /// The rows of the step's hidden states whose logits are asked for, in chunk order.
    pub fn logit_rows(&self) -> Vec<u32> {
        let mut rows = Vec::new();
        let mut start = 0;
        for c in self.chunks {
            let n = c.tokens.len();
            let want = c.logits.rows(n);
            rows.extend((start + n - want..start + n).map(|r| r as u32));
            start += n;
        }
        rows
    }
}

/// One layer's share of the block store.
#[derive(Debug, Clone, Default)]
pub struct PagedKv {
    /// Shared so that the groups of a split step ([`crate::par::on_threads`]) each
    /// write their own sequences' blocks.
    k: SharedCells,
    v: SharedCells,
    blocks: usize,
    block_size: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Below this many multiply-adds an attention step runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

impl PagedKv {
    /// The store of `blocks` blocks, zeroed by the allocator (pages are only touched,
    /// and resident, once used). An allocation the system refuses is an error, not an
    /// abort.
    pub fn new(
        blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> zoo_core::Result<Self> {
        let n = blocks
            .checked_mul(kv_heads * block_size * head_dim)
            .ok_or_else(|| zoo_core::Error::Engine(format!("{blocks} KV blocks overflow")))?;
        Ok(Self {
            k: SharedCells::new(zeroed(n)?),
            v: SharedCells::new(zeroed(n)?),
            blocks,
            block_size,
            kv_heads,
            head_dim,
        })
    }

    /// Positions per block (0 before the store is allocated).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Index of position `pos` of kv head `g` in a sequence with block table `table`.
    fn at(&self, table: &[u32], pos: usize, g: usize) -> usize {
        let block = table[pos / self.block_size] as usize;
        ((block * self.kv_heads + g) * self.block_size + pos % self.block_size) * self.head_dim
    }

    /// The stored values of positions `from..to` of kv head `g`, block by block in
    /// position order (each a contiguous run of whole `head_dim` rows).
    ///
    /// # Safety
    ///
    /// Nothing writes these blocks while the slices live ([`Self::attend_shared`]).
    unsafe fn value_spans<'s>(
        &'s self,
        table: &'s [u32],
        from: usize,
        to: usize,
        g: usize,
    ) -> impl Iterator<Item = &'s [f32]> + Clone + 's {
        let (bs, d, kvh) = (self.block_size, self.head_dim, self.kv_heads);
        let first_block = from / bs;
        let last_block = to.div_ceil(bs);
        (first_block..last_block).map(move |b| {
            let start = if b == first_block { from % bs } else { 0 };
            let end = if (b + 1) * bs <= to { bs } else { to - b * bs };
            let base = (table[b] as usize * kvh + g) * bs;
            // SAFETY: not written meanwhile, by the caller's contract.
            unsafe { self.v.slice((base + start) * d, (end - start) * d) }
        })
    }

    /// The keys of positions `from..to` of kv head `g`, a tile per block (`[head_dim]
    /// [block_size]`) in position order.
    ///
    /// # Safety
    ///
    /// As [`Self::value_spans`].
    unsafe fn key_tiles<'s>(
        &'s self,
        table: &'s [u32],
        from: usize,
        to: usize,
        g: usize,
    ) -> impl Iterator<Item = KeyTile<'s>> + 's {
        let (bs, d, kvh) = (self.block_size, self.head_dim, self.kv_heads);
        (from / bs..to.div_ceil(bs)).map(move |b| {
            // SAFETY: not written meanwhile, by the caller's contract.
            let data = unsafe { self.k.slice((table[b] as usize * kvh + g) * bs * d, bs * d) };
            KeyTile::of(data, bs, b, (from, to))
        })
    }

    /// Writes the step's keys and values (`[1, kv_heads, tokens, head_dim]`) and returns
    /// the attention of `q` (`[1, heads, tokens, head_dim]`) of each token over its
    /// sequence's positions up to its own, `[1, heads, tokens, head_dim]`.
    pub fn attend(
        &mut self,
        layout: &StepLayout,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttnParams,
    ) -> Result<Tensor> {
        // SAFETY: `&mut self`: no other thread touches the store.
        unsafe { self.attend_shared(layout, q, k, v, p) }
    }

    /// [`Self::attend`] for one group of a split step, the other groups running at the
    /// same time on other threads.
    ///
    /// # Safety
    ///
    /// While it runs, no other thread writes a block that `layout`'s chunks read (their
    /// tables up to each token's position), nor reads or writes a block they write (the
    /// blocks of their tokens' positions): [`super::split::plan`] checks this of the
    /// groups it makes.
    pub unsafe fn attend_shared(
        &self,
        layout: &StepLayout,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttnParams,
    ) -> Result<Tensor> {
        let (_, heads, t, d) = q.dims4()?;
        let (_, kv_heads, kt, kd) = k.dims4()?;
        if (kv_heads, kt, kd) != (self.kv_heads, t, self.head_dim)
            || d != kd
            || heads % kv_heads != 0
        {
            candle_core::bail!(
                "paged attention: q {:?}, k {:?} for a store of {} kv heads of {}",
                q.dims(),
                k.dims(),
                self.kv_heads,
                self.head_dim
            );
        }
        layout.check_tables(self.blocks, self.block_size)?;
        let (ks, vs) = (host(k)?, host(v)?);
        for (i, (&c, &pos)) in layout.chunk_of.iter().zip(&layout.position).enumerate() {
            let table = layout.chunks[c].blocks;
            for g in 0..kv_heads {
                let dst = self.at(table, pos, g);
                let src = (g * t + i) * d;
                // Keys feature-major within the block: `[head_dim][block_size]`.
                let (bs, slot) = (self.block_size, pos % self.block_size);
                let tile = dst - slot * d;
                for f in 0..d {
                    // SAFETY: a block of this token's position: no other thread reads
                    // or writes it, by the caller's contract.
                    unsafe {
                        self.v.set(dst + f, vs[src + f]);
                        self.k.set(tile + f * bs + slot, ks[src + f]);
                    }
                }
            }
        }
        let qs = host(q)?;
        let n_rep = heads / kv_heads;
        let scaling = (p.scale as f32, p.softcap.map(|c| c as f32));
        let mut grouped = vec![0f32; heads * t * d];
        let work: usize = layout.position.iter().map(|p| p + 1).sum::<usize>() * heads * d;
        // Unit `g * t + i` is token `i`'s queries of kv group `g`'s heads; it writes their
        // rows, `[n_rep][d]`, which go to `[heads][t][d]` below.
        par_chunks_mut(
            &mut grouped,
            n_rep * d,
            work >= PARALLEL_WORK,
            |units, rows| {
                let mut scratch = Vec::new();
                for (unit, o) in units.zip(rows.chunks_exact_mut(n_rep * d)) {
                    let (g, i) = (unit / t, unit % t);
                    let pos = layout.position[i];
                    let table = layout.chunks[layout.chunk_of[i]].blocks;
                    let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    // SAFETY: the keys and values written above are complete; by the
                    // caller's contract no other thread writes this sequence's blocks.
                    let (keys, values) = unsafe {
                        (
                            self.key_tiles(table, first, pos + 1, g),
                            self.value_spans(table, first, pos + 1, g),
                        )
                    };
                    attend_group(
                        &qs[(g * n_rep * t + i) * d..],
                        (n_rep, t * d, d),
                        keys,
                        values,
                        pos + 1 - first,
                        scaling,
                        &mut scratch,
                        o,
                    );
                }
            },
        );
        let out = ungroup(&grouped, (kv_heads, n_rep, t, d));
        Tensor::from_vec(out, (1, heads, t, d), &candle_core::Device::Cpu)?
            .to_device(q.device())?
            .to_dtype(q.dtype())
    }
}

/// `n` zeroed f32s from the allocator's zeroed memory (no page written here), or an
/// error that says how much was asked for.
pub(crate) fn zeroed(n: usize) -> zoo_core::Result<Vec<f32>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let refused = || {
        zoo_core::Error::Engine(format!(
            "cannot allocate {} MiB for the KV cache; give it a smaller budget (EngineConfig::kv_budget)",
            (n * 4) >> 20
        ))
    };
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| refused())?;
    // SAFETY: `layout` has a non-zero size (n > 0). The pointer, if not null, is an
    // allocation of `n` f32s from the global allocator with f32's alignment, all bytes
    // zero (a valid f32, 0.0), so a `Vec` of length and capacity `n` may own it.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut f32;
        if p.is_null() {
            return Err(refused());
        }
        Ok(Vec::from_raw_parts(p, n, n))
    }
}

/// The tensor's values as host f32s: in place for a CPU f32 tensor; copied back from
/// another device (the block store lives in host memory, so a GPU model's batched
/// steps round-trip each layer's q, k and v through it: correct, not fast).
pub(crate) fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::KvCache;
    use candle_core::Device;
    use zoo_core::Logits;

    /// Two sequences in one step over scattered blocks, against each run alone through
    /// the contiguous [`KvCache`]: the same bits (the same sums in the same order).
    #[test]
    fn a_store_the_system_refuses_is_an_error() {
        let e = PagedKv::new(usize::MAX / 64, 16, 8, 128).unwrap_err();
        assert!(e.to_string().contains("KV"), "{e}");
        let e = PagedKv::new(1 << 40, 16, 2, 64).unwrap_err();
        assert!(e.to_string().contains("cannot allocate"), "{e}");
    }

    #[test]
    fn paged_attention_is_the_contiguous_cache_bit_for_bit() {
        let dev = Device::Cpu;
        let (heads, kvh, d, bs) = (4, 2, 8, 4);
        let params = AttnParams {
            scale: 0.3,
            softcap: Some(4.0),
            window: Some(6),
        };
        let r = |h, n| Tensor::randn(0f32, 1.0, (1, h, n, d), &dev).unwrap();
        // Sequence A: 9 tokens; B: 5 tokens. Prefill both at once.
        let (qa, ka, va) = (r(heads, 9), r(kvh, 9), r(kvh, 9));
        let (qb, kb, vb) = (r(heads, 5), r(kvh, 5), r(kvh, 5));
        let (ta, tb) = ([7u32, 2, 5], [0u32, 6]);
        let chunks = [
            SeqChunk {
                tokens: &[0; 9],
                offset: 0,
                blocks: &ta,
                logits: Logits::Last,
            },
            SeqChunk {
                tokens: &[0; 5],
                offset: 0,
                blocks: &tb,
                logits: Logits::Last,
            },
        ];
        let layout = StepLayout::new(&chunks);
        let cat = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 2).unwrap();
        let mut store = PagedKv::new(8, bs, kvh, d).unwrap();
        let got = store
            .attend(
                &layout,
                &cat(&qa, &qb),
                &cat(&ka, &kb),
                &cat(&va, &vb),
                &params,
            )
            .unwrap();
        for (q, k, v, range) in [(&qa, &ka, &va, 0..9), (&qb, &kb, &vb, 9..14)] {
            let want = KvCache::default().attend(q, k, v, 0, &params).unwrap();
            let got = got.narrow(2, range.start, range.len()).unwrap();
            let (g, w): (Vec<f32>, Vec<f32>) = (
                got.flatten_all().unwrap().to_vec1().unwrap(),
                want.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(g.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // A decode step of B alone continues over its blocks.
        let too_short = [SeqChunk {
            tokens: &[0; 4],
            offset: 5,
            blocks: &tb,
            logits: Logits::Last,
        }];
        let e = store
            .attend(
                &StepLayout::new(&too_short),
                &r(heads, 4),
                &r(kvh, 4),
                &r(kvh, 4),
                &params,
            )
            .unwrap_err();
        assert!(e.to_string().contains("needs 3 blocks"), "{e}");
    }
}
