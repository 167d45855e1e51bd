//! Activations: GELU in its tanh approximation, vectorizable, or as llama.cpp's CPU
//! backend computes it (an f16 lookup table), and the fused, threaded `gelu(gate) * up`
//! of the Gemma feed-forward; SwiGLU of a fused gate-and-up projection.

use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor};

use crate::par::par_chunks_mut;

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

/// How a GELU is computed: as the reference implementation of the checkpoint's format
/// does, so that zoo and its reference compute the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    /// The tanh approximation in f32 ([`gelu_tanh`], within 1e-6 of the exact
    /// function): transformers' `gelu_pytorch_tanh` / `gelu_new`, for safetensors.
    Tanh,
    /// llama.cpp's CPU backend (`GGML_GELU_FP16` in ggml-cpu/vec.h, for `ggml_gelu` and
    /// `ggml_geglu`): 0 at or below -10, the input itself at or above 10, and otherwise
    /// the input rounded to f16 and looked up in a table of the tanh GELU of every f16
    /// value (computed in f32 with `tanhf`), itself rounded to f16. That is up to half an
    /// f16 ulp (2^-11 relative) on the input and again on the output: about 1e-3 relative,
    /// which six random layers carry to ~2e-3 on the logits. For GGUF files, whose
    /// reference is llama.cpp.
    GgmlF16Table,
}

/// ggml's `ggml_gelu_f32`, the function its f16 table holds.
fn ggml_gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's `ggml_table_gelu_f16`, as f32: the GELU of every f16 bit pattern, rounded to
/// f16. Built once (256 KiB).
fn ggml_gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                half::f16::from_f32(ggml_gelu_f32(x)).to_f32()
            })
            .collect()
    })
}

/// One GELU value as [`Gelu::GgmlF16Table`] computes it (`ggml_vec_gelu_f32`).
#[inline(always)]
fn gelu_ggml(table: &[f32], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[half::f16::from_f32(x).to_bits() as usize]
    }
}

impl Gelu {
    /// `gelu(v) * w` for every pair, into `dst`.
    fn apply(self, dst: &mut [f32], v: &[f32], w: Option<&[f32]>) {
        match self {
            Gelu::Tanh => match w {
                Some(w) => dst
                    .iter_mut()
                    .zip(v)
                    .zip(w)
                    .for_each(|((d, &v), &w)| *d = gelu_tanh(v) * w),
                None => dst.iter_mut().zip(v).for_each(|(d, &v)| *d = gelu_tanh(v)),
            },
            Gelu::GgmlF16Table => {
                let t = ggml_gelu_table();
                match w {
                    // ggml_vec_geglu_f32: the looked-up value times the up projection (at
                    // or above 10, `x * g`, which is the same expression).
                    Some(w) => dst
                        .iter_mut()
                        .zip(v)
                        .zip(w)
                        .for_each(|((d, &v), &w)| *d = gelu_ggml(t, v) * w),
                    None => dst
                        .iter_mut()
                        .zip(v)
                        .for_each(|(d, &v)| *d = gelu_ggml(t, v)),
                }
            }
        }
    }
}

/// `gelu(x)` computed as `kind` says (f32 on the CPU; otherwise candle's GELU).
pub fn gelu(x: &Tensor, kind: Gelu) -> Result<Tensor> {
    map_gelu(x, None, kind)
}

/// SwiGLU of a fused gate-and-up projection `[.., 2 * ff]`: `silu(first half) * second
/// half` (llama.cpp's `ffn_up` of Phi-3 and GLM-4 holds both).
pub fn silu_mul_halves(gate_up: &Tensor) -> Result<Tensor> {
    let last = gate_up.rank() - 1;
    let ff = gate_up.dim(last)? / 2;
    silu_mul(
        &gate_up.narrow(last, 0, ff)?,
        &gate_up.narrow(last, ff, ff)?,
    )
}

/// `gelu(gate) * up` ([`Gelu`]) in one pass instead of candle's two and, for a
/// prompt, split over candle's thread pool (candle's unary ops run on the calling
/// thread: Gemma 3's GELU was a tenth of its prompt time with the second core idle).
pub fn gelu_mul(gate: &Tensor, up: &Tensor, kind: Gelu) -> Result<Tensor> {
    map_gelu(gate, Some(up), kind)
}

fn cpu_f32_slice(s: &candle_core::Storage) -> Result<&[f32]> {
    match s {
        candle_core::Storage::Cpu(c) => c.as_slice::<f32>(),
        _ => candle_core::bail!("gelu: CPU tensors expected"),
    }
}

/// `gelu(gate)`, times `up` where given, over candle's thread pool for large inputs.
fn map_gelu(gate: &Tensor, up: Option<&Tensor>, kind: Gelu) -> Result<Tensor> {
    map_gated(gate, up, |dst, g, u| kind.apply(dst, g, u)).unwrap_or_else(|| {
        // Only the CPU path has the table; elsewhere both forms are candle's GELU.
        let g = gate.gelu()?;
        match up {
            Some(u) => g * u,
            None => Ok(g),
        }
    })
}

/// `silu(gate) * up` in one pass instead of candle's two and, for a batched step or a
/// prompt, split over candle's thread pool (candle's unary ops run on the calling
/// thread, the second core idle meanwhile: the engine at 16 sequences went from 294-307
/// to 307-322 tok/s, SmolLM2, alternating runs). The same expression as candle's SiLU,
/// `v / (1 + e^-v)` with the platform's `exp`, then the product: the same bits.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    map_gated(gate, Some(up), |dst, g, u| {
        let u = u.unwrap_or_default();
        for ((d, &v), &w) in dst.iter_mut().zip(g).zip(u) {
            *d = v / (1.0 + (-v).exp()) * w;
        }
    })
    .unwrap_or_else(|| candle_nn::ops::silu(gate)? * up)
}

/// `f(dst, gate, up)` over chunks of contiguous CPU f32 tensors of one shape, over
/// candle's thread pool for large inputs; `None` for other tensors (the caller's
/// candle form).
fn map_gated(
    gate: &Tensor,
    up: Option<&Tensor>,
    f: impl Fn(&mut [f32], &[f32], Option<&[f32]>) + Sync,
) -> Option<Result<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(cpu_f32(gate) && up.is_none_or(|u| cpu_f32(u) && u.shape() == gate.shape())) {
        return None;
    }
    let run = || -> Result<Tensor> {
        let g = gate.contiguous()?;
        let u = up.map(|u| u.contiguous()).transpose()?;
        let n = g.elem_count();
        let mut out = vec![0f32; n];
        {
            let gs_guard = g.storage_and_layout().0;
            let us_guard = u.as_ref().map(|u| u.storage_and_layout().0);
            let gs = &cpu_f32_slice(&gs_guard)?[g.layout().start_offset()..][..n];
            let us = match (&us_guard, &u) {
                (Some(s), Some(u)) => Some(&cpu_f32_slice(s)?[u.layout().start_offset()..][..n]),
                _ => None,
            };
            const CHUNK: usize = 4096;
            let parallel = n.div_ceil(CHUNK) >= 4;
            par_chunks_mut(&mut out, CHUNK, parallel, |chunks, dst| {
                let range = chunks.start * CHUNK..chunks.start * CHUNK + dst.len();
                f(dst, &gs[range.clone()], us.map(|u| &u[range]));
            });
        }
        Tensor::from_vec(out, g.shape(), g.device())
    };
    Some(run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::max_abs;
    use candle_core::Device;

    /// The fused, threaded GELU product agrees with candle's `gelu(gate) * up` to f32
    /// rounding, for a prompt-sized input (threaded) and a decode-sized one.
    #[test]
    fn gelu_mul_equals_candles_gelu_times_up() {
        let dev = Device::Cpu;
        for shape in [(1, 1, 2048), (1, 128, 2048), (2, 3, 5)] {
            let g = Tensor::randn(0f32, 3.0, shape, &dev).unwrap();
            let u = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let want = (g.gelu().unwrap() * &u).unwrap();
            let got = gelu_mul(&g, &u, Gelu::Tanh).unwrap();
            assert_eq!(got.dims(), want.dims());
            let scale = max_abs(&want).max(1.0);
            let d = max_abs(&(got - want).unwrap());
            assert!(d <= 1e-6 * scale, "{shape:?}: {d}");
        }
    }

    /// The fused, threaded SiLU product is candle's `silu(gate) * up` bit for bit, for a
    /// batched step (threaded) and a decode-sized input.
    #[test]
    fn silu_mul_is_candles_silu_times_up() {
        let dev = Device::Cpu;
        for shape in [(1, 1, 1536), (1, 16, 1536), (2, 3, 5)] {
            let g = Tensor::randn(0f32, 3.0, shape, &dev).unwrap();
            let u = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let want: Vec<f32> = (candle_nn::ops::silu(&g).unwrap() * &u)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = silu_mul(&g, &u)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, want, "{shape:?}");
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

    /// llama.cpp's form: an f16 value from the table for every input inside (-10, 10),
    /// the same for inputs that round to the same f16, within 2^-10 relative (half an f16
    /// ulp on the input and on the output) of the tanh GELU away from its zero, and
    /// ggml's thresholds outside; the fused product is the lookup times `up`.
    #[test]
    fn ggml_table_gelu_is_an_f16_lookup() {
        let t = ggml_gelu_table();
        let mut worst = 0f32;
        // Inside the thresholds (x in -9.996..9.996); outside them the input is returned.
        for i in -24_990..=24_990 {
            let x = i as f32 * 4.0e-4 + 1.3e-5;
            let y = gelu_ggml(t, x);
            assert_eq!(
                half::f16::from_f32(y).to_f32(),
                y,
                "{x}: {y} is no f16 value"
            );
            let xr = half::f16::from_f32(x).to_f32();
            assert_eq!(y, gelu_ggml(t, xr), "{x} and {xr} differ");
            if x.abs() > 0.5 {
                worst = worst.max((y - gelu_tanh(x)).abs() / gelu_tanh(x).abs().max(0.1));
            }
        }
        assert!(worst > 0.0 && worst < 2.0f32.powi(-9), "{worst}");
        assert_eq!(gelu_ggml(t, -10.0), 0.0);
        assert_eq!(gelu_ggml(t, 10.0), 10.0);
        assert_eq!(gelu_ggml(t, 12.5), 12.5);
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 3.0, (1, 64, 300), &dev).unwrap();
        let u = Tensor::randn(0f32, 1.0, (1, 64, 300), &dev).unwrap();
        let fused: Vec<f32> = gelu_mul(&g, &u, Gelu::GgmlF16Table)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let alone: Vec<f32> = gelu(&g, Gelu::GgmlF16Table)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let up: Vec<f32> = u.flatten_all().unwrap().to_vec1().unwrap();
        for ((f, a), w) in fused.iter().zip(&alone).zip(&up) {
            assert_eq!(*f, a * w);
        }
    }
}
