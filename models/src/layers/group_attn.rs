//! The arithmetic of one attention unit on the host, shared by the single-sequence
//! cache ([`super::KvCache`]) and the block store ([`super::PagedKv`]): the query heads
//! of one KV group at one position, over that group's keys and values in position
//! order.
//!
//! Keys are stored in tiles of consecutive positions, feature-major (`[head_dim][width]`,
//! [`KeyTile`]), so the scores of a tile's positions are one multiply-add per feature
//! across the tile's lanes, and the heads of a group share each loaded tile. Each
//! score is the same sum whatever the tile's width or the heads beside it: the
//! features of q times k, added in feature order with fused multiply-adds. Then, per
//! head, the scores scaled (and soft-capped), their maximum, `exp(s - max)` ([`exp`],
//! a polynomial the compiler vectorizes), their sum in sixteen strided lanes added in
//! a fixed order, and the values weighted by `e / sum` added in position order (fused
//! multiply-adds). A result therefore depends on its own query and its sequence's keys
//! and values alone: not on the other sequences of a step, on chunking, on the block
//! size or on whether a prefix came from the cache.

use std::ops::Range;

/// Eight running sums so the loop vectorizes.
#[inline]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// The width of the single-sequence cache's key tiles, and of a block store's when its
/// blocks hold 16 positions (the engine's default): the lanes of one AVX-512 register.
pub(super) const TILE: usize = 16;

/// The keys of `width` consecutive positions of one KV group, `data[f * width + p]`
/// feature `f` of the tile's position `p`; `lanes` the positions the unit attends to.
#[derive(Clone, Copy)]
pub(super) struct KeyTile<'a> {
    pub data: &'a [f32],
    pub width: usize,
    pub lanes: (usize, usize),
}

impl<'a> KeyTile<'a> {
    /// Tile `t` of `width` positions (`data`), the lanes of it inside the positions
    /// `from..to` a unit attends to.
    pub fn of(data: &'a [f32], width: usize, t: usize, (from, to): (usize, usize)) -> Self {
        let start = t * width;
        KeyTile {
            data,
            width,
            lanes: (from.max(start) - start, to.min(start + width) - start),
        }
    }

    fn lanes(&self) -> Range<usize> {
        self.lanes.0..self.lanes.1
    }
}

/// `e^x` for `x <= 0` (a score minus the row's maximum), as Cephes' `expf`: `x` split
/// as `n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for `e^r`, and `2^n`
/// built in the exponent bits. Within 2 ulp of the exact value; below -87.3 (where f32
/// underflows) it is 0. Branch-free, so a loop over a row of scores vectorizes.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let under = x < -87.3;
    let x = x.max(-87.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let r2 = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = p.mul_add(r2, r + 1.0);
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    if under {
        0.0
    } else {
        e * scale
    }
}

/// The scores of `R` heads (`q[r * stride..][..d]`) for a tile of [`TILE`] positions:
/// in AVX-512 registers where the build has them (one register a head), else as
/// [`tile_scores`]. The same fused multiply-adds lane by lane, so the same bits.
#[inline(always)]
fn tile16_scores<const R: usize>(
    q: &[f32],
    stride: usize,
    d: usize,
    tile: &[f32],
) -> [[f32; TILE]; R] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use std::arch::x86_64::*;
        let qs: [&[f32]; R] = std::array::from_fn(|r| &q[r * stride..][..d]);
        assert!(
            tile.len() >= TILE * d,
            "a tile holds {TILE} positions of {d} features"
        );
        // SAFETY: AVX-512F is enabled for this build (the cfg). Each load reads the 16
        // values at `tile[16 * f..]` for `f < d`, inside `tile` (asserted above); each
        // store writes the 16 values of one row of `out`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); R];
            for f in 0..d {
                let k = _mm512_loadu_ps(tile.as_ptr().add(TILE * f));
                for (a, q) in acc.iter_mut().zip(&qs) {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(q[f]), k, *a);
                }
            }
            let mut out = [[0f32; TILE]; R];
            for r in 0..R {
                _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
            }
            out
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    tile_scores::<TILE, R>(q, stride, d, tile)
}

/// The scores of `R` heads (`q[r * stride..][..d]`) for a tile of `W` positions.
#[allow(dead_code)] // the portable form of `tile16_scores`
#[inline(always)]
fn tile_scores<const W: usize, const R: usize>(
    q: &[f32],
    stride: usize,
    d: usize,
    tile: &[f32],
) -> [[f32; W]; R] {
    let mut acc = [[0f32; W]; R];
    let qs: [&[f32]; R] = std::array::from_fn(|r| &q[r * stride..][..d]);
    for (f, keys) in tile.chunks_exact(W).take(d).enumerate() {
        for r in 0..R {
            let qf = qs[r][f];
            for l in 0..W {
                acc[r][l] = qf.mul_add(keys[l], acc[r][l]);
            }
        }
    }
    acc
}

/// One unit: `heads` query rows, row `r` at `q[r * stride..][..d]`, attending over the
/// `n` positions whose keys come as tiles and values as runs of whole `d`-value rows,
/// both in position order. Adds head `r`'s result into `out[r * d..][..d]` (zeroed by
/// the caller). `scratch` is reused between calls.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_group<'k>(
    q: &[f32],
    (heads, stride, d): (usize, usize, usize),
    keys: impl Iterator<Item = KeyTile<'k>>,
    values: impl Iterator<Item = &'k [f32]>,
    n: usize,
    (scale, cap): (f32, Option<f32>),
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    scratch.clear();
    scratch.resize(heads * n, 0.0);
    let scores = &mut scratch[..];
    let mut j = 0;
    for tile in keys {
        let lanes = tile.lanes();
        let mut put = |r: usize, s: &[f32]| {
            scores[r * n + j..][..lanes.len()].copy_from_slice(&s[lanes.clone()]);
        };
        let mut r = 0;
        if tile.width == TILE {
            // Eight heads at a time: eight independent chains of multiply-adds.
            macro_rules! heads {
                ($($k:literal)*) => {
                    while r < heads {
                        let q = &q[r * stride..];
                        match heads - r {
                            $($k => {
                                for (i, s) in tile16_scores::<$k>(q, stride, d, tile.data).iter().enumerate() {
                                    put(r + i, s);
                                }
                                r += $k;
                            })*
                            _ => {
                                for (i, s) in tile16_scores::<8>(q, stride, d, tile.data).iter().enumerate() {
                                    put(r + i, s);
                                }
                                r += 8;
                            }
                        }
                    }
                };
            }
            heads!(1 2 3 4 5 6 7);
        } else {
            let w = tile.width;
            let mut s = vec![0f32; w];
            for r in 0..heads {
                let qr = &q[r * stride..][..d];
                s.iter_mut().for_each(|x| *x = 0.0);
                for (f, keys) in tile.data.chunks_exact(w).take(d).enumerate() {
                    for (x, k) in s.iter_mut().zip(keys) {
                        *x = qr[f].mul_add(*k, *x);
                    }
                }
                put(r, &s);
            }
        }
        j += lanes.len();
    }
    debug_assert_eq!(j, n, "the key tiles cover the unit's positions");
    for row in scores.chunks_exact_mut(n) {
        for x in row.iter_mut() {
            *x *= scale;
        }
        if let Some(c) = cap {
            for x in row.iter_mut() {
                *x = (*x / c).tanh() * c;
            }
        }
        // The maximum in sixteen lanes (the same value in any order).
        let mut lanes = [f32::NEG_INFINITY; TILE];
        for c in row.chunks(TILE) {
            for (l, x) in lanes.iter_mut().zip(c) {
                *l = l.max(*x);
            }
        }
        let max = lanes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        for x in row.iter_mut() {
            *x = exp(*x - max);
        }
        let mut lanes = [0f32; TILE];
        let mut chunks = row.chunks_exact(TILE);
        for c in &mut chunks {
            for (l, x) in lanes.iter_mut().zip(c) {
                *l += x;
            }
        }
        for (l, x) in lanes.iter_mut().zip(chunks.remainder()) {
            *l += x;
        }
        let sum: f32 = lanes.iter().sum();
        for x in row.iter_mut() {
            *x /= sum;
        }
    }
    // Per head, the weighted rows of up to 64 positions at a time (kept in the first
    // cache level) into its output held in registers.
    let mut j = 0;
    for run in values {
        for rows in run.chunks(64 * d) {
            let count = rows.len() / d;
            for r in 0..heads {
                let w = &scores[r * n + j..][..count];
                let o = &mut out[r * d..(r + 1) * d];
                match d {
                    64 => weigh::<64>(w, rows, o),
                    128 => weigh::<128>(w, rows, o),
                    _ => {
                        for (w, row) in w.iter().zip(rows.chunks_exact(d)) {
                            for (o, v) in o.iter_mut().zip(row) {
                                *o = w.mul_add(*v, *o);
                            }
                        }
                    }
                }
            }
            j += count;
        }
    }
}

/// `o += w[j] * rows[j]` for each row in order, `D` values a row (a multiple of 16):
/// the output in AVX-512 registers where the build has them. The same fused
/// multiply-adds value by value, so the same bits.
#[inline(always)]
fn weigh<const D: usize>(w: &[f32], rows: &[f32], o: &mut [f32]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use std::arch::x86_64::*;
        assert!(o.len() == D && D.is_multiple_of(16) && rows.len() >= w.len() * D);
        // SAFETY: AVX-512F is enabled for this build (the cfg). Loads and stores of `o`
        // cover its D values in 16s (asserted length); the loads of row `j` read
        // `rows[j * D..(j + 1) * D]` for `j < w.len()`, inside `rows` (asserted).
        unsafe {
            let mut acc: [__m512; 8] = [_mm512_setzero_ps(); 8];
            for (i, a) in acc.iter_mut().enumerate().take(D / 16) {
                *a = _mm512_loadu_ps(o.as_ptr().add(16 * i));
            }
            for (j, w) in w.iter().enumerate() {
                let wv = _mm512_set1_ps(*w);
                let row = rows.as_ptr().add(j * D);
                for (i, a) in acc.iter_mut().enumerate().take(D / 16) {
                    *a = _mm512_fmadd_ps(wv, _mm512_loadu_ps(row.add(16 * i)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate().take(D / 16) {
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * i), *a);
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    weigh_portable::<D>(w, rows, o)
}

/// [`weigh`] without explicit vectors.
#[allow(dead_code)]
#[inline(always)]
fn weigh_portable<const D: usize>(w: &[f32], rows: &[f32], o: &mut [f32]) {
    let mut acc = [0f32; D];
    acc.copy_from_slice(o);
    for (w, row) in w.iter().zip(rows.chunks_exact(D)) {
        for k in 0..D {
            acc[k] = w.mul_add(row[k], acc[k]);
        }
    }
    o.copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 2 ulp of f64's `exp` over the scores' range, 0 below f32's.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), (x as f64).exp() as f32);
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, expected {want} ({ulp} ulp)");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
    }

    /// The register forms compute what the portable forms do, bit for bit.
    #[test]
    fn register_forms_match_the_portable_ones() {
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.7;
        let (w, rows): (Vec<f32>, Vec<f32>) = (
            (0..37).map(val).collect(),
            (0..37 * 128).map(|i| val(i + 5)).collect(),
        );
        let (mut a, mut b) = (vec![0.25f32; 128], vec![0.25f32; 128]);
        weigh::<128>(&w, &rows, &mut a);
        weigh_portable::<128>(&w, &rows, &mut b);
        assert_eq!(a, b);
        let (q, tile): (Vec<f32>, Vec<f32>) = (
            (0..3 * 64).map(val).collect(),
            (0..16 * 64).map(|i| val(i + 9)).collect(),
        );
        assert_eq!(
            tile16_scores::<3>(&q, 64, 64, &tile),
            tile_scores::<16, 3>(&q, 64, 64, &tile)
        );
    }

    /// Keys of `n` positions as tiles of `width`, feature-major.
    fn tiles(keys: &[f32], n: usize, d: usize, width: usize) -> Vec<Vec<f32>> {
        (0..n.div_ceil(width))
            .map(|t| {
                let mut tile = vec![0f32; d * width];
                for p in t * width..n.min((t + 1) * width) {
                    for f in 0..d {
                        tile[f * width + p - t * width] = keys[p * d + f];
                    }
                }
                tile
            })
            .collect()
    }

    /// One unit of `heads` heads over `n` positions, keys in tiles of `width`.
    fn unit(
        q: &[f32],
        heads: usize,
        keys: &[f32],
        values: &[f32],
        n: usize,
        width: usize,
    ) -> Vec<f32> {
        let d = q.len() / heads;
        let tiles = tiles(keys, n, d, width);
        let key_tiles = tiles.iter().enumerate().map(|(t, data)| KeyTile {
            data,
            width,
            lanes: (0, n.min((t + 1) * width) - t * width),
        });
        let mut out = vec![0f32; heads * d];
        attend_group(
            q,
            (heads, d, d),
            key_tiles,
            std::iter::once(values),
            n,
            (0.125, None),
            &mut Vec::new(),
            &mut out,
        );
        out
    }

    /// A head's result is the same bits whatever the tile width (the block size) and
    /// whichever heads share its unit.
    #[test]
    fn a_heads_result_depends_on_neither_tiles_nor_neighbours() {
        let (d, n, heads) = (64, 37, 7);
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.7;
        let q: Vec<f32> = (0..heads * d).map(val).collect();
        let keys: Vec<f32> = (0..n * d).map(|i| val(i + 11)).collect();
        let values: Vec<f32> = (0..n * d).map(|i| val(i + 23)).collect();
        let wide = unit(&q, heads, &keys, &values, n, TILE);
        assert_eq!(wide, unit(&q, heads, &keys, &values, n, 4));
        for r in 0..heads {
            let alone = unit(&q[r * d..(r + 1) * d], 1, &keys, &values, n, TILE);
            assert_eq!(alone, wide[r * d..(r + 1) * d]);
        }
        // And it is attention: against a plain f64 computation.
        for r in 0..heads {
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    (0..d)
                        .map(|f| q[r * d + f] as f64 * keys[j * d + f] as f64)
                        .sum::<f64>()
                        * 0.125
                })
                .collect();
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for f in 0..d {
                let want: f64 = (0..n).map(|j| e[j] / sum * values[j * d + f] as f64).sum();
                assert!(
                    (wide[r * d + f] as f64 - want).abs() < 1e-5,
                    "head {r} feature {f}"
                );
            }
        }
    }
}
