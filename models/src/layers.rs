//! Layers shared by the architecture files that build their own forward pass (where
//! candle-transformers' is wrong or missing something): one rotary table per base
//! frequency, sized to what is used and grown on demand; causal masks with an optional
//! sliding window; a KV cache that a reset really empties; grouped-query attention.

use candle_core::{DType, Device, Module, Result, Tensor};

/// cos/sin tables for rotary position embeddings ("NeoX" layout: the two halves of each
/// head are rotated together), shared by every layer with the same base. Sized to the
/// positions actually reached, not to the model's maximum context.
#[derive(Debug, Clone)]
pub struct RopeTable {
    inv_freq: Vec<f32>,
    /// Positions are multiplied by this (1 / linear scaling factor).
    position_scale: f32,
    cos: Tensor,
    sin: Tensor,
}

impl RopeTable {
    /// `dim` is the rotated width of a head (`head_dim`, or less with partial rotary).
    pub fn new(dim: usize, base: f32, position_scale: f32, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
            .collect();
        let empty = Tensor::zeros((0, inv_freq.len()), DType::F32, device)?;
        Ok(Self {
            inv_freq,
            position_scale,
            cos: empty.clone(),
            sin: empty,
        })
    }

    fn ensure(&mut self, len: usize) -> Result<()> {
        let have = self.cos.dim(0)?;
        if len <= have {
            return Ok(());
        }
        let new_len = len.next_power_of_two().max(256);
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(new_len * half);
        for p in 0..new_len {
            let p = p as f32 * self.position_scale;
            angles.extend(self.inv_freq.iter().map(|f| p * f));
        }
        let t = Tensor::from_vec(angles, (new_len, half), self.cos.device())?;
        self.cos = t.cos()?;
        self.sin = t.sin()?;
        Ok(())
    }

    /// Divides each frequency by its factor (llama.cpp's `rope_freqs` tensor, written
    /// for Llama 3.1-style long-context scaling).
    pub fn with_factors(mut self, factors: &[f32]) -> Result<Self> {
        if factors.len() != self.inv_freq.len() {
            candle_core::bail!(
                "{} rope frequency factors for {} frequencies",
                factors.len(),
                self.inv_freq.len()
            );
        }
        for (f, k) in self.inv_freq.iter_mut().zip(factors) {
            *f /= k;
        }
        Ok(self)
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]` for positions
    /// `offset..offset + seq`.
    pub fn apply(&mut self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        self.ensure(offset + seq)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }

    /// As [`Self::apply`] with GPT-J's interleaved pairs, which llama.cpp's `llama`
    /// GGUFs use (the converter permutes q/k rows to make NeoX checkpoints fit it).
    pub fn apply_interleaved(&mut self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        self.ensure(offset + seq)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin)
    }
}

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
/// On CPU the cache is a pair of f32 buffers `[batch * kv_heads][capacity][head_dim]`
/// grown by doubling: a step writes its positions in place and attends to the buffers
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
            let cap = need.max(self.cap * 2).max(64);
            let mut nk = vec![0f32; groups * cap * d];
            let mut nv = vec![0f32; groups * cap * d];
            for g in 0..groups {
                let used = self.len * d;
                let (src, dst) = (g * self.cap * d, g * cap * d);
                nk[dst..dst + used].copy_from_slice(&self.k[src..src + used]);
                nv[dst..dst + used].copy_from_slice(&self.v[src..src + used]);
            }
            (self.k, self.v, self.cap) = (nk, nv, cap);
        }
        for g in 0..groups {
            let dst = (g * self.cap + self.len) * d;
            let src = g * seq * d;
            self.k[dst..dst + seq * d].copy_from_slice(&k[src..src + seq * d]);
            self.v[dst..dst + seq * d].copy_from_slice(&v[src..src + seq * d]);
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
        let mut out = vec![0f32; heads * seq * d];
        let out_ptr = out.as_mut_ptr() as usize;
        let (scale, cap) = (p.scale as f32, p.softcap.map(|c| c as f32));
        let item = |unit: usize, scores: &mut Vec<f32>| {
            let (head, i) = (unit / seq, unit % seq);
            let group = group_base + head / n_rep;
            let pos = offset + i;
            let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let qrow = &q[(head * seq + i) * d..][..d];
            let keys = &self.k[(group * self.cap + first) * d..(group * self.cap + pos + 1) * d];
            let values = &self.v[(group * self.cap + first) * d..(group * self.cap + pos + 1) * d];
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for key in keys.chunks_exact(d) {
                let mut x = dot(qrow, key) * scale;
                if let Some(c) = cap {
                    x = (x / c).tanh() * c;
                }
                max = max.max(x);
                scores.push(x);
            }
            let mut sum = 0f32;
            for x in scores.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            // SAFETY: every (head, query) row of `out` is written by exactly one unit.
            let o =
                unsafe { std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(unit * d), d) };
            for (w, value) in scores.iter().zip(values.chunks_exact(d)) {
                let w = w / sum;
                for (o, v) in o.iter_mut().zip(value) {
                    *o += w * v;
                }
            }
        };
        let units = heads * seq;
        let work = self.len * units * d;
        let run = |range: std::ops::Range<usize>| {
            let mut scores = Vec::with_capacity(self.len);
            for unit in range {
                item(unit, &mut scores);
            }
        };
        if work < ATTN_PARALLEL_WORK {
            run(0..units);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(units, run);
        }
        out
    }
}

/// Eight running sums so the loop vectorizes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
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
        scores = scores.broadcast_add(m)?;
    }
    let p = candle_nn::ops::softmax_last_dim(&scores)?;
    p.matmul(&v)
}

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

/// Splits `[batch, seq, heads * head_dim]` into `[batch, heads, seq, head_dim]`.
pub fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, s, _) = x.dims3()?;
    x.reshape((b, s, heads, head_dim))?.transpose(1, 2)
}

/// Joins `[batch, heads, seq, head_dim]` back into `[batch, seq, heads * head_dim]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, s, h * d))
}

/// The last position of `[batch, seq, hidden]`, as `[batch, 1, hidden]`.
pub fn last_position(x: &Tensor) -> Result<Tensor> {
    let s = x.dim(1)?;
    x.narrow(1, s - 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest absolute value of `t`.
    fn max_abs(t: &Tensor) -> f32 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

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
    fn rope_table_grows_and_matches_a_fresh_one() {
        let mut small = RopeTable::new(8, 10_000.0, 1.0, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 8), &Device::Cpu).unwrap();
        let a = small.apply(&x, 1000).unwrap();
        let mut big = RopeTable::new(8, 10_000.0, 1.0, &Device::Cpu).unwrap();
        big.ensure(5000).unwrap();
        let b = big.apply(&x, 1000).unwrap();
        let d = max_abs(&(a - b).unwrap());
        assert_eq!(d, 0.0);
    }

    /// A prompt-sized batch against the same rows one at a time: for zoo's kernel
    /// formats the same 8-bit product (a tile of rows at a time, a different summation
    /// order); for Q4_K / Q6_K, zoo's kernels for the prompt and candle's for single
    /// rows, each within the 8-bit error of the exact product; for the others the f32
    /// product with the dequantized weight.
    #[test]
    fn qlinear_prompt_path_matches_the_quantized_path() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 256), &dev).unwrap();
        // Whole tiles of rows for the tile kernels, and rows left over.
        let x = Tensor::randn(0f32, 1.0, (1, PROMPT_GEMM_ROWS + 3, 256), &dev).unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap());
            let lin = QLinear::new(q.clone()).unwrap();
            let batch = lin.forward(&x).unwrap();
            // The same rows one at a time take the 8-bit quantized path.
            let rows: Vec<Tensor> = (0..x.dim(1).unwrap())
                .map(|i| lin.forward(&x.narrow(1, i, 1).unwrap()).unwrap())
                .collect();
            let single = Tensor::cat(&rows, 1).unwrap();
            // And the exact product with the dequantized weight.
            let exact = x
                .broadcast_matmul(&q.dequantize(&dev).unwrap().t().unwrap())
                .unwrap();
            let scale = max_abs(&exact);
            let d_single = max_abs(&(&single - &exact).unwrap());
            // 8-bit activations: about 1% of the largest output at most.
            assert!(
                d_single <= 2e-2 * scale,
                "{dtype:?}: quantized path off by {d_single} (scale {scale})"
            );
            let format = crate::qkernels::Format::from_ggml(dtype);
            if format.is_some_and(|f| !f.prompt_only()) {
                let d = max_abs(&(&batch - &single).unwrap());
                assert!(
                    d <= 1e-5 * scale,
                    "{dtype:?}: batch off the row-by-row product by {d}"
                );
            } else if format.is_some() {
                // Q4_K / Q6_K: zoo's 8-bit product for the prompt, candle's (8 bits per
                // 256 values) for single rows: both within the 8-bit error of exact.
                let d = max_abs(&(&batch - &exact).unwrap());
                assert!(
                    d <= 2e-2 * scale,
                    "{dtype:?}: prompt path off the exact product by {d} (scale {scale})"
                );
                assert!(
                    d > 0.0,
                    "{dtype:?}: the prompt path should be the 8-bit one"
                );
            } else {
                let d = max_abs(&(&batch - &exact).unwrap());
                assert!(
                    d <= 1e-4 * scale,
                    "{dtype:?}: prompt path off the exact product by {d}"
                );
            }
        }
    }

    /// The fused, threaded GELU product agrees with candle's `gelu(gate) * up` to f32
    /// rounding, for a prompt-sized input (threaded) and a decode-sized one.
    #[test]
    fn gelu_mul_equals_candles_gelu_times_up() {
        let dev = Device::Cpu;
        for shape in [(1, 1, 2048), (1, 128, 2048), (2, 3, 5)] {
            let g = Tensor::randn(0f32, 3.0, shape, &dev).unwrap();
            let u = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let want = (g.gelu().unwrap() * &u).unwrap();
            let got = gelu_mul(&g, &u).unwrap();
            assert_eq!(got.dims(), want.dims());
            let scale = max_abs(&want).max(1.0);
            let d = max_abs(&(got - want).unwrap());
            assert!(d <= 1e-6 * scale, "{shape:?}: {d}");
        }
    }

    /// The vectorizable exponential and GELU against f64 over their whole range,
    /// including the clamped tails.
    #[test]
    fn exp_and_gelu_are_within_1e6_of_f64() {
        let mut worst = (0f64, 0f64);
        for i in -20_000..=20_000 {
            let t = i as f32 * 0.0044;
            if t >= -87.0 {
                let e = (t as f64).exp();
                worst.0 = worst.0.max(((exp_f32(t) as f64) - e).abs() / e);
            }
            let x = t as f64 * 0.2;
            let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let g = 0.5 * x * (1.0 + z.tanh());
            worst.1 = worst
                .1
                .max((gelu_tanh(x as f32) as f64 - g).abs() / x.abs().max(1e-3));
        }
        assert!(worst.0 < 1e-6 && worst.1 < 1e-6, "{worst:?}");
        assert!(gelu_tanh(-100.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(100.0), 100.0);
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
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

/// GELU in its tanh approximation (transformers' `gelu_pytorch_tanh`, llama.cpp's GELU),
/// as `x * sigmoid(2z)` (= `0.5 x (1 + tanh z)`, `z = sqrt(2/pi) (x + 0.044715 x^3)`)
/// with an exponential of plain arithmetic, so that the loop over a tensor vectorizes:
/// libm's `tanhf` (candle's `gelu`) was 12 % of Gemma 3's prompt time. Within 1e-6 of
/// the exact function (relative, tested); llama.cpp itself looks GELU up in an f16
/// table.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let z = SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x);
    x / (1.0 + exp_f32(-2.0 * z))
}

/// `e^t` to about 1 ulp for `t` in [-87, 88] (clamped there), branch-free: `2^n * p(r)`
/// with `n = round(t / ln 2)`, `r = t - n ln 2` (ln 2 split in two for exactness) and
/// `p` the degree-7 Taylor polynomial (|r| <= ln 2 / 2: remainder < 1e-8).
#[inline(always)]
fn exp_f32(t: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let t = t.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 * 2^23 trick (vectorizes, unlike `round`).
    let n = (t * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = (t - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `gelu(gate) * up` ([`gelu_tanh`]) in one pass instead of candle's two and, for a
/// prompt, split over candle's thread pool (candle's unary ops run on the calling
/// thread: Gemma 3's GELU was a tenth of its prompt time with the second core idle).
pub fn gelu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !(gate.device().is_cpu()
        && gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && gate.shape() == up.shape())
    {
        return gate.gelu()? * up;
    }
    let (g, u) = (gate.contiguous()?, up.contiguous()?);
    let n = g.elem_count();
    let mut out = vec![0f32; n];
    {
        let (gs, _) = g.storage_and_layout();
        let (us, _) = u.storage_and_layout();
        let (gs, us) = match (&*gs, &*us) {
            (candle_core::Storage::Cpu(a), candle_core::Storage::Cpu(b)) => {
                (a.as_slice::<f32>()?, b.as_slice::<f32>()?)
            }
            _ => candle_core::bail!("gelu_mul: CPU tensors expected"),
        };
        let gs = &gs[g.layout().start_offset()..][..n];
        let us = &us[u.layout().start_offset()..][..n];
        let out_ptr = out.as_mut_ptr() as usize;
        const CHUNK: usize = 4096;
        let work = |chunks: std::ops::Range<usize>| {
            let range = chunks.start * CHUNK..(chunks.end * CHUNK).min(n);
            // SAFETY: chunks are disjoint ranges of `out`, which outlives the pool call.
            let dst = unsafe {
                std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(range.start), range.len())
            };
            for ((d, &v), &w) in dst.iter_mut().zip(&gs[range.clone()]).zip(&us[range]) {
                *d = gelu_tanh(v) * w;
            }
        };
        let chunks = n.div_ceil(CHUNK);
        if chunks < 4 {
            work(0..chunks);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(chunks, work);
        }
    }
    Tensor::from_vec(out, g.shape(), g.device())
}

/// Rows from which [`QLinear`] treats a product as a prompt: Q6_K through zoo's
/// kernels, formats without a zoo kernel dequantized to f32. (Q4_K changes kernels at
/// the same count: [`crate::qkernels::K_TILE_ROWS`].)
pub const PROMPT_GEMM_ROWS: usize = crate::qkernels::K_TILE_ROWS;

/// A quantized projection. The activations are quantized to 8 bits per block, as
/// llama.cpp does, and multiplied with the weight blocks in integers: by zoo's own SIMD
/// kernels ([`crate::qkernels`]) for Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K (prompts eight rows
/// at a time, each weight block decoded once for the eight; Q4_K's single tokens in the
/// order of llama.cpp's repacked kernel, which the conformance suite needs, without
/// candle's repacked copy of the weights), and for Q6_K prompts of at least
/// [`PROMPT_GEMM_ROWS`] rows; by candle's quantized matmul for single tokens of Q6_K
/// (candle sums them as llama.cpp does) and for the other formats. For those other
/// formats a batch of at least [`PROMPT_GEMM_ROWS`] rows on CPU instead dequantizes the
/// weight once and runs an f32 matrix product (candle's row-by-row quantized dot
/// products are slower).
#[derive(Debug, Clone)]
pub struct QLinear {
    q: candle_core::quantized::QMatMul,
    weight: Option<std::sync::Arc<candle_core::quantized::QTensor>>,
    /// Set when zoo's kernels handle the weight's format.
    kernel: Option<crate::qkernels::Format>,
    bias: Option<Tensor>,
}

impl QLinear {
    pub fn new(t: std::sync::Arc<candle_core::quantized::QTensor>) -> Result<Self> {
        let q = candle_core::quantized::QMatMul::from_arc(t.clone())?;
        let weight = matches!(q, candle_core::quantized::QMatMul::QTensor(_)).then_some(t);
        let kernel = weight.as_ref().and_then(|w| {
            let format = crate::qkernels::Format::from_ggml(w.dtype())?;
            let k = *w.shape().dims().last()?;
            (k % format.block_values() == 0 && w.device().is_cpu()).then_some(format)
        });
        Ok(Self {
            q,
            weight,
            kernel,
            bias: None,
        })
    }

    /// Adds `bias` (broadcast over the rows) to every product.
    pub fn with_bias(mut self, bias: Option<Tensor>) -> Self {
        self.bias = bias;
        self
    }
}

impl Module for QLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / k.max(1);
        let y = match (&self.weight, self.kernel) {
            (Some(w), Some(format))
                if x.device().is_cpu()
                    && x.dtype() == DType::F32
                    && (!format.prompt_only() || rows >= PROMPT_GEMM_ROWS) =>
            {
                let n = w.shape().dims()[0];
                let x2 = x.flatten_to(candle_core::D::Minus2)?.contiguous()?;
                let (xs, _) = x2.storage_and_layout();
                let xs = match &*xs {
                    candle_core::Storage::Cpu(s) => s.as_slice::<f32>()?,
                    _ => candle_core::bail!("QLinear: CPU input expected"),
                };
                let xs = &xs[x2.layout().start_offset()..][..rows * k];
                let mut out = vec![0f32; rows * n];
                crate::qkernels::matmul(
                    crate::qkernels::Level::detected(),
                    format,
                    &w.data()?,
                    (rows, k, n),
                    xs,
                    &mut out,
                )
                .map_err(candle_core::Error::wrap)?;
                let mut dims = x.dims().to_vec();
                *dims.last_mut().expect("k is the last dimension") = n;
                Tensor::from_vec(out, dims, x.device())?
            }
            (Some(w), _) if rows >= PROMPT_GEMM_ROWS && x.device().is_cpu() => {
                let w = w.dequantize(x.device())?;
                x.broadcast_matmul(&w.t()?)?
            }
            _ => self.q.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
