//! Rotary position embeddings: one cos/sin table per base frequency, shared by every
//! layer with that base, sized to the positions reached and grown on demand.

use candle_core::{DType, Device, Result, Tensor};

/// How a model pairs the rotary dimensions (a fact its architecture file states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// GPT-J style, adjacent pairs: llama.cpp's `llama` converter permutes the q/k rows
    /// into this order.
    Interleaved,
    /// NeoX style, the first half with the second (`qwen2`, `qwen3`, `phi` files).
    Halves,
}

/// cos/sin tables for rotary position embeddings ("NeoX" layout: the two halves of each
/// head are rotated together), shared by every layer with the same base. Sized to the
/// positions actually reached, not to the model's maximum context.
#[derive(Debug, Clone)]
pub struct RopeTable {
    inv_freq: Vec<f32>,
    /// Positions are multiplied by this (1 / linear scaling factor).
    position_scale: f32,
    /// cos and sin are multiplied by this (LongRoPE's attention factor; 1 elsewhere).
    attention_factor: f32,
    cos: Tensor,
    sin: Tensor,
    /// The rows of the last `positions` asked for (a batched step asks the same for q
    /// and k of every layer).
    at: Option<(Vec<usize>, Tensor, Tensor)>,
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
            attention_factor: 1.0,
            cos: empty.clone(),
            sin: empty,
            at: None,
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
        (self.cos, self.sin) = match self.attention_factor {
            1.0 => (t.cos()?, t.sin()?),
            m => (
                t.cos()?.affine(m as f64, 0.0)?,
                t.sin()?.affine(m as f64, 0.0)?,
            ),
        };
        Ok(())
    }

    /// YaRN, as transformers' `_compute_yarn_parameters` and llama.cpp's `rope_yarn`
    /// compute it: each frequency blended between its interpolation (divided by
    /// `factor`) and itself, by a ramp over the rotated pairs from the correction
    /// dimension of `beta_fast` rotations in the original context to that of `beta_slow`
    /// (floored and ceiled, within the rotated width); cos and sin times `attention`.
    pub fn with_yarn(mut self, y: &Yarn) -> Self {
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let corr = |rotations: f64| {
            dim as f64 * (y.original_context / (rotations * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * y.base.ln())
        };
        let low = corr(y.beta_fast).floor().max(0.0) as f32;
        let high = corr(y.beta_slow).ceil().min(dim as f64 - 1.0) as f32;
        let high = if low == high { high + 0.001 } else { high };
        for (i, f) in self.inv_freq.iter_mut().enumerate() {
            // The share of the frequency kept as it is (extrapolated).
            let kept = 1.0 - ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let pos_freq = (y.base as f32).powf((2 * i) as f32 / dim as f32);
            let interpolated = 1.0 / (y.factor as f32 * pos_freq);
            *f = interpolated * (1.0 - kept) + *f * kept;
        }
        self.attention_factor = y.attention as f32;
        self
    }

    /// Multiplies cos and sin by `m`, as llama.cpp's `attn_factor` and transformers'
    /// `attention_scaling` do (LongRoPE: `sqrt(1 + ln(scale) / ln(original context))`).
    pub fn with_attention_factor(mut self, m: f32) -> Self {
        self.attention_factor = m;
        self
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
        candle_nn::rotary_emb::rope(&x.contiguous()?, &like(&cos, x)?, &like(&sin, x)?)
    }

    /// As [`Self::apply`] with GPT-J's interleaved pairs, which llama.cpp's `llama`
    /// GGUFs use (the converter permutes q/k rows to make NeoX checkpoints fit it).
    pub fn apply_interleaved(&mut self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        self.ensure(offset + seq)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, &like(&cos, x)?, &like(&sin, x)?)
    }
}

/// The facts of YaRN scaling (see [`RopeTable::with_yarn`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original_context: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// The rope base the table was made with.
    pub base: f64,
    /// cos and sin times this: `0.1 ln(factor) + 1` unless the model says otherwise.
    pub attention: f64,
}

impl Yarn {
    /// `0.1 * mscale * ln(factor) + 1` (1 for a factor up to 1): transformers'
    /// `get_mscale`, llama.cpp's YaRN magnitude.
    pub fn mscale(factor: f64, mscale: f64) -> f64 {
        if factor <= 1.0 {
            1.0
        } else {
            0.1 * mscale * factor.ln() + 1.0
        }
    }
}

/// A table's rows for the positions of a batched step's tokens ([`RopeTable::at`]):
/// rotates with a shared borrow, so the groups of a split step rotate at once.
#[derive(Debug, Clone)]
pub struct RopeAt {
    cos: Tensor,
    sin: Tensor,
}

impl RopeAt {
    /// As [`RopeTable::apply`] for `x` `[1, heads, tokens, head_dim]` whose tokens sit
    /// at the positions the rows were taken for.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (cos, sin) = (like(&self.cos, x)?, like(&self.sin, x)?);
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }

    /// As [`RopeTable::apply_interleaved`] at the rows' positions.
    pub fn apply_interleaved(&self, x: &Tensor) -> Result<Tensor> {
        let (cos, sin) = (like(&self.cos, x)?, like(&self.sin, x)?);
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin)
    }
}

impl RopeTable {
    /// The rows of `positions` (the table grown to reach them).
    pub fn at(&mut self, positions: &[usize]) -> Result<RopeAt> {
        let (cos, sin) = self.rows(positions)?;
        Ok(RopeAt { cos, sin })
    }

    /// As [`Self::apply`] for `x` `[1, heads, tokens, head_dim]` whose tokens sit at
    /// `positions` (a batched step: several sequences, each at its own position).
    pub fn apply_at(&mut self, x: &Tensor, positions: &[usize]) -> Result<Tensor> {
        self.at(positions)?.apply(x)
    }

    fn rows(&mut self, positions: &[usize]) -> Result<(Tensor, Tensor)> {
        if let Some((p, cos, sin)) = &self.at {
            if p == positions {
                return Ok((cos.clone(), sin.clone()));
            }
        }
        self.ensure(positions.iter().max().map_or(0, |p| p + 1))?;
        let idx: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let idx = Tensor::new(idx.as_slice(), self.cos.device())?;
        let (cos, sin) = (
            self.cos.index_select(&idx, 0)?,
            self.sin.index_select(&idx, 0)?,
        );
        self.at = Some((positions.to_vec(), cos.clone(), sin.clone()));
        Ok((cos, sin))
    }
}

/// The table rows in `x`'s dtype: the tables are f32, a GPU model may run in bf16 or
/// f16 (for f32, the same tensor).
fn like(t: &Tensor, x: &Tensor) -> Result<Tensor> {
    t.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::max_abs;

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

    #[test]
    fn rope_at_positions_is_rope_at_an_offset() {
        let mut t = RopeTable::new(8, 10_000.0, 1.0, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 8), &Device::Cpu).unwrap();
        let a = t.apply(&x, 40).unwrap();
        let b = t.apply_at(&x, &[40, 41, 42]).unwrap();
        assert_eq!(max_abs(&(a - b).unwrap()), 0.0);
        let a = t.apply_interleaved(&x, 7).unwrap();
        let b = t.at(&[7, 8, 9]).unwrap().apply_interleaved(&x).unwrap();
        assert_eq!(max_abs(&(a - b).unwrap()), 0.0);
    }
}
