//! Products with half-precision weights kept as stored (bf16 or f16 safetensors), so
//! that a model's weights stay at 2 bytes per value: each weight row is widened to f32
//! as it is read and multiplied with the f32 activations, summed in f32 (transformers'
//! CPU path also accumulates its bf16 products in f32). A row's result does not depend
//! on the other rows: each output is one dot product in a fixed order
//! ([`super::group_attn::dot`]), whatever the number of rows (the batched forward).

use candle_core::quantized::GgmlDType;
#[cfg(test)]
use half::bf16;
use half::f16;
use half::slice::HalfFloatSliceExt;

/// The stored type of a half-precision weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Bf16,
    F16,
}

impl Half {
    pub fn from_ggml(dtype: GgmlDType) -> Option<Half> {
        match dtype {
            GgmlDType::BF16 => Some(Half::Bf16),
            GgmlDType::F16 => Some(Half::F16),
            _ => None,
        }
    }

    /// `bits` (one weight row) widened into `out` (exactly: every bf16 and f16 value is
    /// an f32 value).
    fn widen(self, bits: &[u8], out: &mut [f32]) {
        debug_assert_eq!(bits.len(), 2 * out.len());
        // Unaligned-safe: the bytes are read in pairs, little-endian (GGUF and
        // safetensors store both types so).
        let halves = bits
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]));
        match self {
            Half::Bf16 => {
                for (o, h) in out.iter_mut().zip(halves) {
                    *o = f32::from_bits((h as u32) << 16);
                }
            }
            Half::F16 => {
                let v: Vec<f16> = halves.map(f16::from_bits).collect();
                v.convert_to_f32_slice(out);
            }
        }
    }
}

/// `out[r * n + j] = x[r] . w[j]` for `rows` activation rows of `k` values against the
/// `n` rows of `w` (`k` half-precision values each, as stored), parallel over the
/// weight's rows.
pub fn matmul_rows(
    kind: Half,
    w: &[u8],
    (rows, k, n): (usize, usize, usize),
    x: &[f32],
    out: &mut [f32],
) {
    assert!(w.len() >= 2 * n * k && x.len() >= rows * k && out.len() >= rows * n);
    // Column `j` of every row, then transposed: parallel over the weight's rows, each
    // widened once for all the activation rows.
    let mut out_t = vec![0f32; n * rows];
    crate::par::par_chunks_mut(&mut out_t, rows, n * rows * k >= 1 << 15, |cols, part| {
        let mut wf = vec![0f32; k];
        for (j, col) in cols.zip(part.chunks_exact_mut(rows)) {
            kind.widen(&w[2 * j * k..2 * (j + 1) * k], &mut wf);
            for (i, o) in col.iter_mut().enumerate() {
                *o = super::group_attn::dot(&x[i * k..(i + 1) * k], &wf);
            }
        }
    });
    for (j, col) in out_t.chunks_exact(rows).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * n + j] = *v;
        }
    }
}

/// The weight rows `from..to` widened to f32, `(to - from) x k` (a prompt's product
/// goes through candle's matrix multiply a block of rows at a time, so that a wide
/// weight, such as a tied 262k-row embedding, is never widened whole).
pub fn widen_rows(kind: Half, w: &[u8], k: usize, from: usize, to: usize) -> Vec<f32> {
    let mut out = vec![0f32; (to - from) * k];
    for (j, row) in (from..to).zip(out.chunks_exact_mut(k)) {
        kind.widen(&w[2 * j * k..2 * (j + 1) * k], row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_bits(v: f32) -> u16 {
        bf16::from_f32(v).to_bits()
    }

    /// Both types widen exactly, and the product is the f32 product of the widened
    /// weights whatever the number of rows.
    #[test]
    fn widened_product_is_row_invariant() {
        let (k, n) = (40, 7);
        let wv: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let xv: Vec<f32> = (0..3 * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 5.0)
            .collect();
        for kind in [Half::Bf16, Half::F16] {
            let bits: Vec<u8> = wv
                .iter()
                .flat_map(|&v| match kind {
                    Half::Bf16 => bf16_bits(v).to_le_bytes(),
                    Half::F16 => f16::from_f32(v).to_bits().to_le_bytes(),
                })
                .collect();
            let wide = widen_rows(kind, &bits, k, 0, n);
            for (a, b) in wide.iter().zip(&wv) {
                let back = match kind {
                    Half::Bf16 => bf16::from_f32(*b).to_f32(),
                    Half::F16 => f16::from_f32(*b).to_f32(),
                };
                assert_eq!(a.to_bits(), back.to_bits());
            }
            let mut three = vec![0f32; 3 * n];
            matmul_rows(kind, &bits, (3, k, n), &xv, &mut three);
            for r in 0..3 {
                let mut one = vec![0f32; n];
                matmul_rows(kind, &bits, (1, k, n), &xv[r * k..(r + 1) * k], &mut one);
                assert_eq!(one, three[r * n..(r + 1) * n].to_vec(), "{kind:?} row {r}");
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|i| xv[r * k + i] as f64 * wide[j * k + i] as f64)
                        .sum();
                    assert!((one[j] as f64 - exact).abs() < 1e-4 * exact.abs().max(1.0));
                }
            }
        }
    }
}
