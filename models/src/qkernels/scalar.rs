//! The scalar kernels, in portable Rust: the reference the SIMD kernels are tested
//! against and the kernels of the scalar level; and the order of a Q4_K row's sums
//! ([`q4k_step`]), which the SIMD single-row kernel shares.

use super::blocks::{f16_to_f32, k_sub_block, q4k_scales_mins};
use super::{ActBlock, Format, Q8KBlock, QK, QK_K};

/// Dot product of one weight row (`blocks` blocks of `format`) with a quantized
/// activation row, in portable Rust: the reference for the SIMD kernels.
pub fn dot_scalar(format: Format, row: &[u8], act: &[ActBlock]) -> f32 {
    let bb = format.block_bytes();
    let mut sum = 0f32;
    for (w, a) in row.chunks_exact(bb).zip(act) {
        let d = f16_to_f32(u16::from_le_bytes([w[0], w[1]]));
        let (dot, offset) = match format {
            Format::Q4_0 | Format::Q4_1 => {
                let qs = if format == Format::Q4_0 {
                    &w[2..18]
                } else {
                    &w[4..20]
                };
                let mut dot = 0i32;
                for (j, &q) in qs.iter().enumerate() {
                    dot += (q & 0x0F) as i32 * a.qs[j] as i32;
                    dot += (q >> 4) as i32 * a.qs[j + 16] as i32;
                }
                let offset = if format == Format::Q4_0 {
                    -8.0 * d
                } else {
                    f16_to_f32(u16::from_le_bytes([w[2], w[3]]))
                };
                (dot, offset)
            }
            Format::Q5_0 => {
                let qh = u32::from_le_bytes([w[2], w[3], w[4], w[5]]);
                let qs = &w[6..22];
                let mut dot = 0i32;
                for (j, &q) in qs.iter().enumerate() {
                    let lo = (q & 0x0F) as u32 | ((qh >> j) & 1) << 4;
                    let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
                    dot += lo as i32 * a.qs[j] as i32 + hi as i32 * a.qs[j + 16] as i32;
                }
                (dot, -16.0 * d)
            }
            Format::Q5_1 => {
                let qh = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
                let qs = &w[8..24];
                let mut dot = 0i32;
                for (j, &q) in qs.iter().enumerate() {
                    let lo = (q & 0x0F) as u32 | ((qh >> j) & 1) << 4;
                    let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
                    dot += lo as i32 * a.qs[j] as i32 + hi as i32 * a.qs[j + 16] as i32;
                }
                (dot, f16_to_f32(u16::from_le_bytes([w[2], w[3]])))
            }
            Format::Q8_0 => {
                let mut dot = 0i32;
                for j in 0..QK {
                    dot += w[2 + j] as i8 as i32 * a.qs[j] as i32;
                }
                (dot, 0.0)
            }
            Format::Q4K | Format::Q6K => unreachable!("K-quants take matmul_k"),
        };
        sum += d * a.d * dot as f32 + offset * a.s;
    }
    sum
}

/// Dot product of one K-quant weight row with an activation row quantized to
/// [`Q8KBlock`]s, in portable Rust: the reference for the SIMD tile kernels.
pub fn dot_scalar_k(format: Format, row: &[u8], act: &[Q8KBlock]) -> f32 {
    let bb = format.block_bytes();
    let mut sum = 0f32;
    for (sb, a) in row.chunks_exact(bb).zip(act) {
        for j in 0..QK_K / QK {
            let (v, lo, hi, offc) = k_sub_block(format, sb, j);
            let qs = &a.qs[j * QK..][..QK];
            let dot = |r: std::ops::Range<usize>| -> i32 { r.map(|l| v[l] * qs[l] as i32).sum() };
            let total = (a.bsums[2 * j] + a.bsums[2 * j + 1]) as f32;
            sum += (lo * dot(0..16) as f32 + hi * dot(16..32) as f32 + offc * total) * a.d;
        }
    }
    sum
}

/// The integer dot products of the 8 sub-blocks of a Q4_K super-block with a
/// [`Q8KBlock`], and the super-block's `d`, `dmin`, scales and mins.
fn q4k_sub_dots(sb: &[u8], a: &Q8KBlock) -> ([i32; 8], f32, f32, [u8; 8], [u8; 8]) {
    let mut dots = [0i32; 8];
    for (j, dot) in dots.iter_mut().enumerate() {
        let qs = &sb[16 + (j / 2) * 32..][..32];
        let shift = 4 * (j % 2);
        *dot = qs
            .iter()
            .zip(&a.qs[32 * j..32 * j + 32])
            .map(|(&q, &x)| ((q >> shift) & 0x0F) as i32 * x as i32)
            .sum();
    }
    let (sc, mn) = q4k_scales_mins(&sb[4..16]);
    let d = f16_to_f32(u16::from_le_bytes([sb[0], sb[1]]));
    let dmin = f16_to_f32(u16::from_le_bytes([sb[2], sb[3]]));
    (dots, d, dmin, sc, mn)
}

/// One step of a Q4_K row in the order of llama.cpp's and candle's repacked x86
/// kernels, which the conformance suite's q4_k_m references were recorded with: per
/// super-block and then sub-block `j`, `acc += dot_j * (scale_j * d_act)` fused, then
/// `acc -= min_j * (d_act * bsum_j)` fused, where `scale_j = d * sc_j` and
/// `min_j = dmin * m_j` (rounded to f32 first, as the repacked tiles store them).
#[inline(always)]
pub(super) fn q4k_step(acc: f32, dot: i32, scale: f32, min: f32, dall: f32, bsum: f32) -> f32 {
    let acc = (dot as f32).mul_add(scale * dall, acc);
    (-min).mul_add(dall * bsum, acc)
}

/// The sum of sub-block `j`'s values in an activation super-block, as a float.
#[inline(always)]
pub(super) fn q8k_sub_sum(a: &Q8KBlock, j: usize) -> f32 {
    (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32) as f32
}

/// One Q4_K weight row against one activation row in [`q4k_step`]'s order, in portable
/// Rust: the reference for the SIMD single-row kernel (and the kernel of the scalar level).
pub fn dot_q4k_ordered(row: &[u8], act: &[Q8KBlock]) -> f32 {
    let mut acc = 0f32;
    for (sb, a) in row.chunks_exact(Format::Q4K.block_bytes()).zip(act) {
        let (dots, d, dmin, sc, mn) = q4k_sub_dots(sb, a);
        for j in 0..8 {
            acc = q4k_step(
                acc,
                dots[j],
                d * sc[j] as f32,
                dmin * mn[j] as f32,
                a.d,
                q8k_sub_sum(a, j),
            );
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use crate::qkernels::test_util::{candle_product, formats, k_formats, pseudo_normal};
    use crate::qkernels::{matmul, Format, Level};
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// The scalar kernel is the 8-bit product llama.cpp computes: candle's own
    /// quantized matmul (same activation quantization: Q8_0 / Q8_1 blocks of 32, Q8_K
    /// super-blocks for the K-quants) agrees to rounding.
    #[test]
    fn scalar_kernel_matches_candles_quantized_matmul() {
        let dev = Device::Cpu;
        let (m, k, n) = (2, 256, 40);
        // Fixed inputs (a few seeds): the two products differ by rounding, and a
        // reproducible test should not pass or fail by the draw.
        for seed in 1..=8u64 {
            let w = Tensor::from_vec(pseudo_normal(n * k, seed), (n, k), &dev).unwrap();
            let x = Tensor::from_vec(pseudo_normal(m * k, seed + 100), (m, k), &dev).unwrap();
            let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            for (format, dtype) in formats().into_iter().chain(k_formats()) {
                let q = std::sync::Arc::new(QTensor::quantize(&w, dtype).unwrap());
                let candle = candle_product(q.clone(), &x);
                let mut ours = vec![0f32; m * n];
                matmul(
                    Level::Scalar,
                    format,
                    &q.data().unwrap(),
                    (m, k, n),
                    &xv,
                    &mut ours,
                )
                .unwrap();
                // Q4_1's and Q5_1's block sums `s` are f16: llama.cpp (and this kernel)
                // rounds `d * sum` once, candle multiplies two f16 values; each block's
                // offset term can differ by ~2^-10 of itself. Over 200 fixed draws of
                // these shapes the largest difference was 1.2e-3 of the largest output
                // (the other formats: 1.8e-7), hence 4e-3.
                let tol = if matches!(format, Format::Q4_1 | Format::Q5_1) {
                    4e-3
                } else {
                    1e-5
                };
                let scale = candle.iter().fold(1f32, |a, v| a.max(v.abs()));
                for (o, c) in ours.iter().zip(&candle) {
                    assert!(
                        (o - c).abs() <= tol * scale,
                        "{format:?}: {o} vs candle {c}"
                    );
                }
            }
        }
    }
}
