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

/// Keys and values of the positions seen so far, `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Appends this step's keys and values; returns everything cached, this step included.
    /// A step at `offset` 0 starts a new sequence.
    pub fn append(&mut self, k: Tensor, v: Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
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
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.kv = None;
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
        let d: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn qlinear_prompt_path_matches_the_quantized_path() {
        use candle_core::quantized::{GgmlDType, QTensor};
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 256), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, PROMPT_GEMM_ROWS, 256), &dev).unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap());
            let lin = QLinear::new(q.clone()).unwrap();
            let fast = lin.forward(&x).unwrap();
            // The same rows one at a time take the 8-bit quantized path.
            let rows: Vec<Tensor> = (0..PROMPT_GEMM_ROWS)
                .map(|i| lin.forward(&x.narrow(1, i, 1).unwrap()).unwrap())
                .collect();
            let slow = Tensor::cat(&rows, 1).unwrap();
            // And the exact product with the dequantized weight.
            let exact = x
                .broadcast_matmul(&q.dequantize(&dev).unwrap().t().unwrap())
                .unwrap();
            let max =
                |t: Tensor| -> f32 { t.abs().unwrap().max_all().unwrap().to_scalar().unwrap() };
            let scale = max(exact.clone());
            let d_fast = max((&fast - &exact).unwrap());
            let d_slow = max((&slow - &exact).unwrap());
            assert!(
                d_fast <= 1e-4 * scale,
                "{dtype:?}: prompt path off the exact product by {d_fast}"
            );
            // 8-bit activations: about 1% of the largest output at most.
            assert!(
                d_slow <= 2e-2 * scale,
                "{dtype:?}: quantized path off by {d_slow} (scale {scale})"
            );
        }
    }

    #[test]
    fn kv_cache_rejects_a_gap_and_restarts_at_zero() {
        let mut c = KvCache::default();
        let t = Tensor::zeros((1, 1, 2, 4), DType::F32, &Device::Cpu).unwrap();
        c.append(t.clone(), t.clone(), 0).unwrap();
        assert!(c.append(t.clone(), t.clone(), 5).is_err());
        let (k, _) = c.append(t.clone(), t.clone(), 0).unwrap();
        assert_eq!(k.dim(2).unwrap(), 2);
    }
}

/// Rows from which [`QLinear`] multiplies with dequantized weights.
pub const PROMPT_GEMM_ROWS: usize = 32;

/// A quantized projection. For one token (decode) it is candle's quantized matmul,
/// which quantizes the activations to 8 bits per block as llama.cpp does. For a batch
/// of at least [`PROMPT_GEMM_ROWS`] rows on CPU (prompt processing) it dequantizes the
/// weight once and runs an f32 matrix product: the dequantization costs one pass over
/// the weight against `rows` passes of the product, and candle's f32 gemm is much faster
/// than its row-by-row quantized dot products. The result is the same product with
/// unrounded activations (closer to the exact one than the 8-bit path).
#[derive(Debug, Clone)]
pub struct QLinear {
    q: candle_core::quantized::QMatMul,
    weight: Option<std::sync::Arc<candle_core::quantized::QTensor>>,
    bias: Option<Tensor>,
}

impl QLinear {
    pub fn new(t: std::sync::Arc<candle_core::quantized::QTensor>) -> Result<Self> {
        let q = candle_core::quantized::QMatMul::from_arc(t.clone())?;
        let weight = matches!(q, candle_core::quantized::QMatMul::QTensor(_)).then_some(t);
        Ok(Self {
            q,
            weight,
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
        let y = match &self.weight {
            Some(w) if rows >= PROMPT_GEMM_ROWS && x.device().is_cpu() => {
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
