//! Attention: the causal mask with an optional sliding window, the KV cache (on CPU
//! f32 buffers written in place and attended to directly, each query head reading its
//! group's keys; tensors concatenated elsewhere), and grouped-query attention on tensors
//! (the other devices' path and the reference the cache is tested against).

use candle_core::{DType, Device, Result, Tensor};

use super::group_attn::{attend_group, KeyTile, TILE};
use crate::par::par_chunks_mut;

/// The additive attention mask for `seq` queries at positions `offset..offset + seq`
/// over keys `0..offset + seq`: key `j` is visible to query `i` when `j <= i` and, with a
/// sliding window `w`, `i - j < w` (as transformers and llama.cpp define the window).
/// `None` when nothing is masked.
pub fn causal_mask(
    seq: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let kv = offset + seq;
    let window_cuts = window.is_some_and(|w| kv > w);
    if seq == 1 && !window_cuts {
        return Ok(None);
    }
    let mut m = Vec::with_capacity(seq * kv);
    for q in 0..seq {
        let i = offset + q;
        for j in 0..kv {
            let visible = j <= i && window.is_none_or(|w| i - j < w);
            m.push(if visible { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    Tensor::from_vec(m, (1, 1, seq, kv), device).map(Some)
}

/// How a layer attends: the score scale, Gemma 2's soft-capping of the scores
/// (`tanh(x / cap) * cap`) and a sliding window (key `j` visible to query `i` when
/// `i - j < window`, as transformers and llama.cpp define it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    pub scale: f64,
    pub softcap: Option<f64>,
    pub window: Option<usize>,
}

impl AttnParams {
    /// Causal attention scaled by `1 / sqrt(head_dim)`, the usual case.
    pub fn for_head_dim(head_dim: usize) -> Self {
        Self::causal(1.0 / (head_dim as f64).sqrt())
    }

    pub fn causal(scale: f64) -> Self {
        Self {
            scale,
            softcap: None,
            window: None,
        }
    }
}

/// Keys and values of the positions seen so far, with causal attention over them.
///
/// On CPU the cache is a pair of f32 buffers grown by doubling, values
/// `[batch * kv_heads][capacity][head_dim]` and keys in tiles of [`TILE`] positions
/// (`[batch * kv_heads][capacity / TILE][head_dim][TILE]`, see `group_attn.rs`): a step writes its positions in place and attends to the buffers
/// directly, each query head reading its group's keys without copying them
/// (grouped-query attention with no repeated keys, no mask tensor, no concatenation of
/// the whole cache per step; for SmolLM2 after a 128-token prompt these were a third
/// of the decode time). On other devices it keeps candle tensors and concatenates.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    host: HostKv,
    tensors: Option<(Tensor, Tensor)>,
}

#[derive(Debug, Clone, Default)]
struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
    /// `batch * kv_heads`.
    groups: usize,
    head_dim: usize,
    len: usize,
    cap: usize,
}

/// Below this many multiply-adds an attention step runs on the calling thread.
const ATTN_PARALLEL_WORK: usize = 1 << 15;

impl HostKv {
    fn append(&mut self, k: &[f32], v: &[f32], groups: usize, seq: usize, d: usize) {
        if self.len == 0 {
            self.groups = groups;
            self.head_dim = d;
        }
        let need = self.len + seq;
        if need > self.cap {
            let cap = need.max(self.cap * 2).max(64).next_multiple_of(TILE);
            let mut nk = vec![0f32; groups * cap * d];
            let mut nv = vec![0f32; groups * cap * d];
            for g in 0..groups {
                let (src, dst) = (g * self.cap * d, g * cap * d);
                let (keys, values) = (self.len.next_multiple_of(TILE) * d, self.len * d);
                nk[dst..dst + keys].copy_from_slice(&self.k[src..src + keys]);
                nv[dst..dst + values].copy_from_slice(&self.v[src..src + values]);
            }
            (self.k, self.v, self.cap) = (nk, nv, cap);
        }
        for g in 0..groups {
            let dst = (g * self.cap + self.len) * d;
            let src = g * seq * d;
            self.v[dst..dst + seq * d].copy_from_slice(&v[src..src + seq * d]);
            for (i, key) in k[src..src + seq * d].chunks_exact(d).enumerate() {
                let pos = self.len + i;
                let tile = (g * self.cap + pos / TILE * TILE) * d;
                for (f, x) in key.iter().enumerate() {
                    self.k[tile + f * TILE + pos % TILE] = *x;
                }
            }
        }
        self.len = need;
    }

    /// Attention of `q` (`[heads][seq][d]`, the last `seq` cached positions) over the
    /// `kv_heads` groups of the cache from `group_base`.
    fn attend(
        &self,
        q: &[f32],
        heads: usize,
        kv_heads: usize,
        group_base: usize,
        seq: usize,
        p: &AttnParams,
    ) -> Vec<f32> {
        let d = self.head_dim;
        let n_rep = heads / kv_heads;
        let offset = self.len - seq;
        let scaling = (p.scale as f32, p.softcap.map(|c| c as f32));
        // Unit `g * seq + i` is query `i` of kv group `g`'s heads; it writes their rows,
        // `[n_rep][d]`, which go to `[heads][seq][d]` below.
        let mut grouped = vec![0f32; heads * seq * d];
        let work = self.len * heads * seq * d;
        par_chunks_mut(
            &mut grouped,
            n_rep * d,
            work >= ATTN_PARALLEL_WORK,
            |units, rows| {
                let mut scratch = Vec::new();
                for (unit, o) in units.zip(rows.chunks_exact_mut(n_rep * d)) {
                    let (g, i) = (unit / seq, unit % seq);
                    let group = group_base + g;
                    let pos = offset + i;
                    let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    let span = (group * self.cap + first) * d..(group * self.cap + pos + 1) * d;
                    let q = &q[(g * n_rep * seq + i) * d..];
                    let base = group * self.cap * d;
                    let tiles = (first / TILE..=pos / TILE).map(|t| {
                        let data = &self.k[base + t * TILE * d..][..TILE * d];
                        KeyTile::of(data, TILE, t, (first, pos + 1))
                    });
                    attend_group(
                        q,
                        (n_rep, seq * d, d),
                        tiles,
                        std::iter::once(&self.v[span]),
                        pos + 1 - first,
                        scaling,
                        &mut scratch,
                        o,
                    );
                }
            },
        );
        ungroup(&grouped, (kv_heads, n_rep, seq, d))
    }
}

/// `[kv_heads][seq][n_rep][d]` rows (a unit's heads together) as `[heads][seq][d]`.
pub(super) fn ungroup(
    grouped: &[f32],
    (kv_heads, n_rep, seq, d): (usize, usize, usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; grouped.len()];
    for g in 0..kv_heads {
        for i in 0..seq {
            for r in 0..n_rep {
                let src = ((g * seq + i) * n_rep + r) * d;
                let dst = (((g * n_rep + r) * seq) + i) * d;
                out[dst..dst + d].copy_from_slice(&grouped[src..src + d]);
            }
        }
    }
    out
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl KvCache {
    /// Appends this step's keys and values (`[batch, kv_heads, seq, head_dim]`, at
    /// positions `offset..offset + seq`) and returns the attention of `q`
    /// (`[batch, heads, seq, head_dim]`) over every cached position,
    /// `[batch, heads, seq, head_dim]`. A step at `offset` 0 starts a new sequence.
    pub fn attend(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offset: usize,
        params: &AttnParams,
    ) -> Result<Tensor> {
        let (b, heads, seq, d) = q.dims4()?;
        let (kb, kv_heads, kseq, kd) = k.dims4()?;
        if (kb, kseq, kd) != (b, seq, d) || v.dims4()? != k.dims4()? || heads % kv_heads != 0 {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not fit together",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        if !(q.device().is_cpu() && q.dtype() == DType::F32 && k.dtype() == DType::F32) {
            let (k, v) = self.append_tensors(k.clone(), v.contiguous()?, offset)?;
            let mask = causal_mask(seq, offset, params.window, q.device())?;
            return attention(q, &k, &v, mask.as_ref(), params.scale, params.softcap);
        }
        let held = if offset == 0 { 0 } else { self.host.len };
        if held != offset {
            candle_core::bail!(
                "KV cache holds {held} positions but the step starts at position {offset}"
            );
        }
        if offset == 0 {
            self.host.len = 0;
        } else if self.host.groups != b * kv_heads || self.host.head_dim != d {
            candle_core::bail!(
                "KV cache holds {} groups of {} values; this step has {} of {d}",
                self.host.groups,
                self.host.head_dim,
                b * kv_heads
            );
        }
        self.host
            .append(&host_f32(k)?, &host_f32(v)?, b * kv_heads, seq, d);
        let qs = host_f32(q)?;
        let per = heads * seq * d;
        let mut out = Vec::with_capacity(qs.len());
        // Each sequence of a batch attends to its own groups of the cache.
        for bi in 0..b {
            let q = &qs[bi * per..(bi + 1) * per];
            out.extend(
                self.host
                    .attend(q, heads, kv_heads, bi * kv_heads, seq, params),
            );
        }
        Tensor::from_vec(out, (b, heads, seq, d), q.device())
    }

    fn append_tensors(&mut self, k: Tensor, v: Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.tensors.take() {
            Some((pk, pv)) if offset > 0 => {
                if pk.dim(2)? != offset {
                    candle_core::bail!(
                        "KV cache holds {} positions but the step starts at position {offset}",
                        pk.dim(2)?
                    );
                }
                (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?)
            }
            _ => (k, v),
        };
        self.tensors = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.host.len = 0;
        self.tensors = None;
    }
}

/// Scaled dot-product attention with grouped-query heads: `q` is
/// `[batch, heads, seq, head_dim]`, `k`/`v` are `[batch, kv_heads, kv_seq, head_dim]`.
/// `softcap` applies Gemma 2's `tanh(x / cap) * cap` to the scores.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    softcap: Option<f64>,
) -> Result<Tensor> {
    let n_rep = q.dim(1)? / k.dim(1)?;
    let k = candle_transformers::utils::repeat_kv(k.clone(), n_rep)?.contiguous()?;
    let v = candle_transformers::utils::repeat_kv(v.clone(), n_rep)?.contiguous()?;
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(cap) = softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    if let Some(m) = mask {
        // The mask is f32; the scores take the model's dtype (bf16/f16 on a GPU).
        scores = scores.broadcast_add(&m.to_dtype(scores.dtype())?)?;
    }
    let p = candle_nn::ops::softmax_last_dim(&scores)?;
    p.matmul(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::max_abs;

    #[test]
    fn sliding_window_mask_follows_transformers() {
        let m = causal_mask(4, 0, Some(2), &Device::Cpu).unwrap().unwrap();
        let v: Vec<Vec<f32>> = m.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let visible: Vec<Vec<bool>> = v
            .iter()
            .map(|r| r.iter().map(|x| *x == 0.0).collect())
            .collect();
        assert_eq!(
            visible,
            vec![
                vec![true, false, false, false],
                vec![true, true, false, false],
                vec![false, true, true, false],
                vec![false, false, true, true],
            ]
        );
        // One decode step past the window still masks the old keys.
        let m = causal_mask(1, 3, Some(2), &Device::Cpu).unwrap().unwrap();
        let v: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            v.iter().map(|x| *x == 0.0).collect::<Vec<_>>(),
            [false, false, true, true]
        );
        assert!(causal_mask(1, 3, None, &Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn kv_cache_rejects_a_gap_and_restarts_at_zero() {
        let mut c = KvCache::default();
        let t = Tensor::zeros((1, 1, 2, 4), DType::F32, &Device::Cpu).unwrap();
        let p = AttnParams::causal(1.0);
        c.attend(&t, &t, &t, 0, &p).unwrap();
        let e = c.attend(&t, &t, &t, 5, &p).unwrap_err();
        assert!(e.to_string().contains("holds 2 positions"), "{e}");
        c.attend(&t, &t, &t, 0, &p).unwrap();
        c.attend(&t, &t, &t, 2, &p).unwrap();
        c.clear();
        assert!(c.attend(&t, &t, &t, 2, &p).is_err());
    }

    /// The in-place cache and its attention against the tensor reference (concatenated
    /// cache, repeated kv heads, mask tensor, candle's softmax): a prompt and then
    /// single-token steps past the growth of the buffers, with grouped-query heads, a
    /// batch of two, sliding windows and soft-capping.
    #[test]
    fn in_place_attention_matches_the_tensor_reference() {
        let dev = Device::Cpu;
        let (b, heads, kv_heads, d) = (2, 6, 2, 16);
        for params in [
            AttnParams::causal(0.25),
            AttnParams {
                scale: 0.25,
                softcap: Some(5.0),
                window: Some(7),
            },
            AttnParams {
                scale: 0.125,
                softcap: None,
                window: Some(1),
            },
        ] {
            let mut cache = KvCache::default();
            let (mut rk, mut rv): (Option<Tensor>, Option<Tensor>) = (None, None);
            let mut offset = 0;
            for seq in [5, 1, 1, 70, 1, 3] {
                let r = |h| Tensor::randn(0f32, 1.0, (b, h, seq, d), &dev).unwrap();
                let (q, k, v) = (r(heads), r(kv_heads), r(kv_heads));
                let got = cache.attend(&q, &k, &v, offset, &params).unwrap();
                let ck = match rk.take() {
                    Some(p) => Tensor::cat(&[&p, &k], 2).unwrap(),
                    None => k.clone(),
                };
                let cv = match rv.take() {
                    Some(p) => Tensor::cat(&[&p, &v], 2).unwrap(),
                    None => v.clone(),
                };
                let mask = causal_mask(seq, offset, params.window, &dev).unwrap();
                let want =
                    attention(&q, &ck, &cv, mask.as_ref(), params.scale, params.softcap).unwrap();
                let diff = max_abs(&(got - want).unwrap());
                assert!(diff < 1e-5, "{params:?} at {offset}+{seq}: off by {diff}");
                (rk, rv) = (Some(ck), Some(cv));
                offset += seq;
            }
        }
    }
}
