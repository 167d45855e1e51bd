//! LFM2's gated short convolution, the mixer of the layers that have no attention:
//! `out(C * conv(B * x))` where `in_proj` gives B, C and x (in that order) and `conv`
//! is a causal depthwise convolution over the last `L` positions of `B * x`
//! (transformers' `Lfm2ShortConv`, llama.cpp's `build_shortconv_block`).
//!
//! What a position keeps for the ones after it is its row of `B * x`: the single
//! sequence keeps the last `L - 1` rows; a batched step writes every position's row
//! into the block store (one row of `hidden` values per position, where an attention
//! layer keeps its keys and values), so a cached prefix, chunking and the other
//! sequences of a step change nothing. Both sum a channel's `L` products in the same
//! order, positions before the first counting as zero rows.

use candle_core::{DType, Tensor};
use zoo_core::{Error, Result};

use super::ffn::mm;
use crate::layers::{host, zeroed, QLinear, StepLayout};
use crate::par::SharedCells;

pub(super) struct ShortConv {
    /// `[3 * hidden, hidden]`: B, C and x.
    pub in_proj: QLinear,
    pub out_proj: QLinear,
    /// `[hidden][len]`, oldest position first.
    pub weight: Vec<f32>,
    pub hidden: usize,
    pub len: usize,
    /// The single sequence: the `B * x` rows of its last `len - 1` positions and how
    /// many positions it has seen.
    state: Vec<f32>,
    seen: usize,
    /// The batched steps' store: `[block][slot][hidden]` (shared, as a layer's KV
    /// blocks, by the groups of a split step).
    store: SharedCells,
    blocks: usize,
    block_size: usize,
}

impl ShortConv {
    pub fn new(in_proj: QLinear, out_proj: QLinear, weight: Vec<f32>, hidden: usize) -> Self {
        let len = weight.len() / hidden.max(1);
        Self {
            in_proj,
            out_proj,
            weight,
            hidden,
            len,
            state: Vec::new(),
            seen: 0,
            store: SharedCells::default(),
            blocks: 0,
            block_size: 0,
        }
    }

    /// Forgets the single sequence.
    pub fn clear(&mut self) {
        self.seen = 0;
    }

    /// Replaces the block store with `blocks` blocks of `block_size` positions.
    pub fn allocate(&mut self, blocks: usize, block_size: usize) -> Result<()> {
        self.store = SharedCells::default(); // the old store goes before the new comes
                                             // No blocks until the new store exists: a failed allocation leaves none to use.
        (self.blocks, self.block_size) = (0, 0);
        self.store = SharedCells::new(zeroed(
            blocks
                .checked_mul(block_size * self.hidden)
                .ok_or_else(|| zoo_core::Error::Engine(format!("{blocks} KV blocks overflow")))?,
        )?);
        (self.blocks, self.block_size) = (blocks, block_size);
        Ok(())
    }

    /// Positions per block of the store (0 before it is allocated).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// B, C and x of every row of `n` (`[1, tokens, hidden]`) as host values, and the
    /// rows of `B * x`.
    fn gates(&self, n: &Tensor, rows: bool) -> Result<(Vec<f32>, Vec<f32>)> {
        let h = self.hidden;
        let bcx = host(&mm(&self.in_proj, n, rows)?)?;
        let bx = bcx
            .chunks_exact(3 * h)
            .flat_map(|r| r[..h].iter().zip(&r[2 * h..]).map(|(b, x)| b * x))
            .collect();
        Ok((bcx, bx))
    }

    /// `C * conv` of one position into `y`: `rows(k)` is the `B * x` row of the
    /// position `len - 1 - k` before it (`None` before the first position).
    fn mix<'a>(&self, c: &[f32], rows: impl Fn(usize) -> Option<&'a [f32]>, y: &mut [f32]) {
        let (h, l) = (self.hidden, self.len);
        let rows: Vec<Option<&[f32]>> = (0..l).map(rows).collect();
        for ch in 0..h {
            let mut s = 0f32;
            for (k, row) in rows.iter().enumerate() {
                let v = row.map_or(0.0, |r| r[ch]);
                s += self.weight[ch * l + k] * v;
            }
            y[ch] = c[ch] * s;
        }
    }

    /// The mixer's output for one sequence's tokens `n` (`[1, tokens, hidden]`) at
    /// positions `offset..`; a step at 0 starts a new sequence.
    pub fn forward(&mut self, n: &Tensor, offset: usize) -> Result<Tensor> {
        let (h, l) = (self.hidden, self.len);
        if offset == 0 {
            self.seen = 0;
            self.state = vec![0f32; (l - 1) * h];
        } else if offset != self.seen {
            return Err(candle_core::Error::Msg(format!(
                "convolution state holds {} positions but the step starts at position {offset}",
                self.seen
            ))
            .into());
        }
        let (bcx, bx) = self.gates(n, false)?;
        let t = bx.len() / h;
        // The rows before the step, then the step's.
        let mut hist = std::mem::take(&mut self.state);
        hist.extend_from_slice(&bx);
        let mut y = vec![0f32; t * h];
        for (i, y) in y.chunks_exact_mut(h).enumerate() {
            let pos = offset + i;
            let c = &bcx[i * 3 * h + h..][..h];
            self.mix(
                c,
                |k| (pos + k + 1 >= l).then(|| &hist[(i + k) * h..][..h]),
                y,
            );
        }
        self.state = hist[t * h..].to_vec();
        self.seen = offset + t;
        self.project(y, t, n, false)
    }

    /// The batched form: every token's `B * x` row written where its sequence's block
    /// table says, then each token's convolution over its sequence's rows.
    ///
    /// # Safety
    ///
    /// As [`crate::layers::PagedKv::attend_shared`]: no other thread writes the blocks
    /// `layout`'s chunks read, nor touches those they write.
    pub unsafe fn forward_batch(&self, n: &Tensor, layout: &StepLayout) -> Result<Tensor> {
        let (h, l) = (self.hidden, self.len);
        layout.check_tables(self.blocks, self.block_size)?;
        let (bcx, bx) = self.gates(n, true)?;
        let at = |table: &[u32], pos: usize| {
            (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size) * h
        };
        for (i, (&c, &pos)) in layout.chunk_of.iter().zip(&layout.position).enumerate() {
            let dst = at(layout.chunks[c].blocks, pos);
            for (j, &v) in bx[i * h..][..h].iter().enumerate() {
                // SAFETY: a block of this token's position, which no other thread
                // touches (the caller's contract).
                unsafe { self.store.set(dst + j, v) };
            }
        }
        let t = layout.position.len();
        let mut y = vec![0f32; t * h];
        for (i, y) in y.chunks_exact_mut(h).enumerate() {
            let (pos, table) = (layout.position[i], layout.chunks[layout.chunk_of[i]].blocks);
            let c = &bcx[i * 3 * h + h..][..h];
            self.mix(
                c,
                // SAFETY: a row of this sequence, complete above; no other thread
                // writes its blocks (the caller's contract).
                |k| {
                    (pos + k + 1 >= l)
                        .then(|| unsafe { self.store.slice(at(table, pos + k + 1 - l), h) })
                },
                y,
            );
        }
        self.project(y, t, n, true)
    }

    /// `out_proj` of the mixed rows, on `n`'s device and in its dtype.
    fn project(&self, y: Vec<f32>, t: usize, n: &Tensor, rows: bool) -> Result<Tensor> {
        let y = Tensor::from_vec(y, (1, t, self.hidden), &candle_core::Device::Cpu)?
            .to_device(n.device())?
            .to_dtype(n.dtype())?;
        Ok(mm(&self.out_proj, &y, rows)?)
    }
}

/// The convolution weight (`[hidden, len]`, or transformers' `[hidden, 1, len]`) as
/// host values, oldest position first.
pub(super) fn conv_weight(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

/// What config.json says of LFM2's layers (transformers' `Lfm2Config`).
#[derive(serde::Deserialize)]
pub(super) struct HfConv {
    /// `conv` or `full_attention` per layer; else `full_attn_idxs`, the attention
    /// layers (every layer when neither is given).
    layer_types: Option<Vec<String>>,
    full_attn_idxs: Option<Vec<usize>>,
    #[serde(rename = "conv_L_cache")]
    l_cache: Option<usize>,
    conv_bias: Option<bool>,
}

impl HfConv {
    /// The convolution's length in positions (Lfm2Config's default 3).
    pub fn len(&self) -> usize {
        self.l_cache.unwrap_or(3)
    }

    /// Whether each of the `layers` layers is a convolution, as transformers decides.
    pub fn layers(
        &self,
        layers: usize,
        refuse: &dyn Fn(String, &str) -> Error,
    ) -> Result<Vec<bool>> {
        if self.conv_bias == Some(true) {
            return Err(refuse(
                "`conv_bias: true` is not supported".into(),
                "zoo's LFM2 convolution has no biases; released LFM2 models have none",
            ));
        }
        if !(1..=64).contains(&self.len()) {
            return Err(refuse(
                format!("`conv_L_cache` {}", self.len()),
                "a convolution length of 1 to 64 positions",
            ));
        }
        match (&self.layer_types, &self.full_attn_idxs) {
            (Some(kinds), _) => {
                let bad = kinds
                    .iter()
                    .find(|k| !matches!(k.as_str(), "conv" | "full_attention"));
                if kinds.len() != layers || bad.is_some() {
                    return Err(refuse(
                        format!("`layer_types` {kinds:?} for {layers} layers"),
                        "one of `conv` or `full_attention` per layer",
                    ));
                }
                Ok(kinds.iter().map(|k| k == "conv").collect())
            }
            (None, Some(attention)) => Ok((0..layers).map(|i| !attention.contains(&i)).collect()),
            (None, None) => Ok(vec![false; layers]),
        }
    }
}
