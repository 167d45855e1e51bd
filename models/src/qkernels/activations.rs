//! The activations' side of a product: rows quantized to 8 bits as llama.cpp does
//! (blocks of 32 values, [`ActBlock`]; `Q8_K` super-blocks of 256, [`Q8KBlock`]), and
//! the same blocks of [`TILE`] rows interleaved for the tile kernels ([`ActTile`],
//! [`KTile`]).

use super::{Format, QK, QK_K};

/// One block of an activation row quantized to 8 bits, with what every format's
/// kernel needs precomputed: the scale and the scaled sum of the quantized values
/// (the offset term of Q4_0, Q4_1, Q5_0 and Q5_1).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub d: f32,
    /// `d * sum(qs)` (for Q4_1 and Q5_1 rounded to f16 as llama.cpp's Q8_1 stores it).
    pub s: f32,
    pub qs: [i8; QK],
}

/// Activation rows per tile of the prompt kernels.
pub const TILE: usize = 8;

/// The same block of [`TILE`] activation rows, interleaved for the tile kernels: one
/// load gives 4 values of 4 rows at two places of the block, which meet the weight's
/// values there after one in-lane shuffle of the decoded weight block (`vpshufd`).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct ActTile {
    /// The rows' scales, as the lanes of the two accumulators: `[d0..d3, d0..d3]` and
    /// `[d4..d7, d4..d7]`.
    pub d: [[f32; TILE]; 2],
    /// The rows' `d * sum`.
    pub s: [f32; TILE],
    /// 128 times the sum of each row's values in each half of the block, as the lanes
    /// of the tile kernel's integer sums (`[g][i]`: row `4 * g + i % 4`, values 0-15
    /// for `i < 4`, else 16-31): with VNNI, Q8_0's signed weights meet the rows as
    /// unsigned bytes (+128) and this takes the excess back out, exactly.
    pub hs: [[i32; TILE]; 2],
    /// `qt[2 * c + g]`: bytes `4 * i + t` (`i < 4`) are value `4 * c + t` of row
    /// `4 * g + i`; bytes `16 + 4 * i + t` are value `16 + 4 * c + t` of that row.
    pub qt: [[i8; QK]; 8],
}

impl ActTile {
    pub(super) fn new(rows: [&ActBlock; TILE]) -> ActTile {
        let qt = interleave(rows.map(|r| &r.qs[..]));
        let d = |g: usize| std::array::from_fn(|l| rows[4 * g + l % 4].d);
        let hs = |g: usize| {
            std::array::from_fn(|l| {
                let half = &rows[4 * g + l % 4].qs[16 * (l / 4)..][..16];
                128 * half.iter().map(|&q| q as i32).sum::<i32>()
            })
        };
        ActTile {
            d: [d(0), d(1)],
            s: rows.map(|a| a.s),
            hs: [hs(0), hs(1)],
            qt,
        }
    }
}

/// Eight rows' 32 values laid out as [`ActTile::qt`].
fn interleave(rows: [&[i8]; TILE]) -> [[i8; QK]; 8] {
    let mut qt = [[0; QK]; 8];
    for (r, row) in rows.iter().enumerate() {
        let (g, i) = (r / 4, r % 4);
        for c in 0..4 {
            qt[2 * c + g][4 * i..4 * i + 4].copy_from_slice(&row[4 * c..4 * c + 4]);
            qt[2 * c + g][16 + 4 * i..16 + 4 * i + 4]
                .copy_from_slice(&row[16 + 4 * c..16 + 4 * c + 4]);
        }
    }
    qt
}

/// A super-block of an activation row quantized as llama.cpp's `Q8_K` (what its K-quant
/// dot products take): one f32 scale for 256 values, and the sums of each 16.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Q8KBlock {
    pub d: f32,
    pub bsums: [i16; QK_K / 16],
    pub qs: [i8; QK_K],
}

impl Q8KBlock {
    pub(super) const ZERO: Q8KBlock = Q8KBlock {
        d: 0.0,
        bsums: [0; QK_K / 16],
        qs: [0; QK_K],
    };
}

/// The same super-block of [`TILE`] activation rows, laid out for the K-quant tile
/// kernels: values by sub-block of 32 then row, and the partial sums transposed so that
/// one `vpmaddwd` weighs a pair of them by the weight's scales (or mins) for all rows.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct KTile {
    pub d: [f32; TILE],
    /// `[p][2 * i + h]`: sum of the 16 values `32 * p + 16 * h ..` of row `i`.
    pub sums16: [[i16; 2 * TILE]; QK_K / QK],
    /// `[p][2 * i + h]`: sum of sub-block `2 * p + h` (32 values) of row `i`.
    pub sums32: [[i16; 2 * TILE]; QK_K / QK / 2],
    /// `[j][i]`: sub-block `j` of row `i`.
    pub qs: [[[i8; QK]; TILE]; QK_K / QK],
}

impl KTile {
    pub(super) fn new(rows: [&Q8KBlock; TILE]) -> KTile {
        let mut t = KTile {
            d: rows.map(|r| r.d),
            sums16: [[0; 2 * TILE]; QK_K / QK],
            sums32: [[0; 2 * TILE]; QK_K / QK / 2],
            qs: [[[0; QK]; TILE]; QK_K / QK],
        };
        for (i, r) in rows.iter().enumerate() {
            for (j, sub) in r.qs.chunks_exact(QK).enumerate() {
                t.qs[j][i].copy_from_slice(sub);
                t.sums16[j][2 * i] = r.bsums[2 * j];
                t.sums16[j][2 * i + 1] = r.bsums[2 * j + 1];
                t.sums32[j / 2][2 * i + j % 2] = r.bsums[2 * j] + r.bsums[2 * j + 1];
            }
        }
        t
    }
}

/// The same super-block of [`TILE`] activation rows for Q4_K's single-row order
/// ([`super::dot_q4k_ordered`]) computed for the rows at once: each 32-value sub-block
/// interleaved as [`ActTile::qt`] (one load gives 4 values of 4 rows), and the rows'
/// scales and sub-block sums as the lanes of one register.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct OrderedKTile {
    pub d: [f32; TILE],
    /// `[j][i]`: the sum of sub-block `j` of row `i`, as a float (`q8k_sub_sum`).
    pub bsum: [[f32; TILE]; QK_K / QK],
    /// `[j]`: sub-block `j` of the rows, laid out as [`ActTile::qt`].
    pub qt: [[[i8; QK]; 8]; QK_K / QK],
}

impl OrderedKTile {
    pub(super) fn new(rows: [&Q8KBlock; TILE]) -> OrderedKTile {
        let mut t = OrderedKTile {
            d: rows.map(|r| r.d),
            bsum: [[0.0; TILE]; QK_K / QK],
            qt: [[[0; QK]; 8]; QK_K / QK],
        };
        for j in 0..QK_K / QK {
            t.qt[j] = interleave(rows.map(|r| &r.qs[QK * j..QK * (j + 1)]));
            for (r, row) in rows.iter().enumerate() {
                t.bsum[j][r] = (row.bsums[2 * j] as i32 + row.bsums[2 * j + 1] as i32) as f32;
            }
        }
        t
    }
}

fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `v` rounded to the nearest integer, ties to even, for `|v| < 2^22`, as llama.cpp's
/// `nearest_int`: adding 1.5 * 2^23 leaves the integer in the low mantissa bits. Plain
/// arithmetic, so the quantization loops vectorize (`f32::round_ties_even` is a call
/// to libm's `rintf` per value without SSE4.1 at compile time: 13 % of a prompt).
#[inline]
fn nearest_int(v: f32) -> i32 {
    debug_assert!(v.abs() < (1 << 22) as f32);
    ((v + 12_582_912.0).to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// Quantizes `x` (a multiple of [`QK`] long) to 8-bit blocks as llama.cpp's x86
/// `quantize_row_q8_0` (and `q8_1` for Q4_1 and Q5_1) does: scale `max|x| / 127` stored as f16,
/// values `x * 127 / max|x|` rounded to nearest even (`_mm256_round_ps`), and for Q8_1
/// the block sum times the unrounded scale, rounded to f16 once. (candle rounds half
/// away from zero and multiplies the f16 sum by the f16 scale: rarely a different
/// value, but the sensitivity of greedy decoding makes it visible.)
pub fn quantize_activations(format: Format, x: &[f32], out: &mut [ActBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = abs_max(xs);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = nearest_int(v * id) as i8;
            sum += *q as i32;
        }
        b.d = round_f16(d);
        b.s = match format {
            Format::Q4_1 | Format::Q5_1 => round_f16(d * sum as f32),
            _ => b.d * sum as f32,
        };
    }
}

/// The largest `|v|` of `xs` (NaNs passed over, 0 for none), in 16 independent lanes
/// so that it vectorizes: a maximum is exact, so the order of the comparisons changes
/// nothing (a single running maximum was a chain of dependent compares, most of the
/// time of quantizing a decode step's activations).
#[inline]
fn abs_max(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = m.max(v.abs());
        }
    }
    for (m, v) in lanes.iter_mut().zip(chunks.remainder()) {
        *m = m.max(v.abs());
    }
    lanes.iter().fold(0f32, |m, &v| m.max(v))
}

/// Quantizes `x` (a multiple of [`QK_K`] long) as llama.cpp's `quantize_row_q8_K`:
/// per 256 values, the value of largest magnitude maps to -127 (scale `-max / 127`,
/// kept in f32), the others are rounded to nearest even, and each 16 are summed.
pub fn quantize_q8k(x: &[f32], out: &mut [Q8KBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (xs, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        // The value of largest magnitude, the first of them on a tie (as a running
        // `|v| > amax` scan finds it).
        let amax = abs_max(xs);
        if amax == 0.0 {
            *b = Q8KBlock::ZERO;
            continue;
        }
        let max = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *sum = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qkernels::test_util::pseudo_normal;

    /// The lane-wise maximum is the running one's: random rows with ties of both
    /// signs, NaNs, zeros.
    #[test]
    fn abs_max_is_the_running_maximum() {
        let running = |xs: &[f32]| {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xs {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            (amax, max)
        };
        let mut rows: Vec<Vec<f32>> = (0..50)
            .map(|i| pseudo_normal(32 + 7 * i, i as u64))
            .collect();
        let mut tie = vec![0.5f32; 256];
        tie[40] = -3.0;
        tie[200] = 3.0;
        rows.push(tie);
        let mut nan = pseudo_normal(256, 99);
        nan[0] = f32::NAN;
        nan[77] = f32::NAN;
        rows.push(nan);
        rows.push(vec![0.0; 32]);
        rows.push(vec![-0.0; 32]);
        for xs in &rows {
            let (amax, max) = running(xs);
            assert_eq!(abs_max(xs).to_bits(), amax.to_bits(), "{xs:?}");
            let first = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
            if amax != 0.0 {
                assert_eq!(first.to_bits(), max.to_bits(), "{xs:?}");
            }
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even_as_rintf() {
        for (v, want) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (126.7, 127),
            (-127.0, -127),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
        for v in pseudo_normal(10_000, 7) {
            let v = v * 40.0;
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
    }
}
