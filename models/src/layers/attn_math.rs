//! The register forms of attention's arithmetic ([`super::group_attn`]'s unit): the
//! scores of a tile of keys for several heads, the values weighted into an output
//! held in registers, and `exp`. Each has a portable form it matches bit for bit
//! (the same fused multiply-adds in the same order); AVX-512 where the build has it.

use super::group_attn::TILE;

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
pub(super) fn tile16_scores<const R: usize>(
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

/// [`tile16_scores`] for two tiles at once, their loads side by side (two streams of
/// reads in flight instead of one). Each lane's sum is the same chain of multiply-adds
/// as one tile alone, so the same bits.
#[inline(always)]
pub(super) fn tile16_scores2<const R: usize>(
    q: &[f32],
    stride: usize,
    d: usize,
    (a, b): (&[f32], &[f32]),
) -> [[[f32; TILE]; R]; 2] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use std::arch::x86_64::*;
        let qs: [&[f32]; R] = std::array::from_fn(|r| &q[r * stride..][..d]);
        assert!(
            a.len() >= TILE * d && b.len() >= TILE * d,
            "a tile holds {TILE} positions of {d} features"
        );
        // SAFETY: AVX-512F is enabled for this build (the cfg). Each load reads the 16
        // values at `a[16 * f..]` or `b[16 * f..]` for `f < d`, inside them (asserted
        // above); each store writes the 16 values of one row of `out`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); R]; 2];
            for f in 0..d {
                let ka = _mm512_loadu_ps(a.as_ptr().add(TILE * f));
                let kb = _mm512_loadu_ps(b.as_ptr().add(TILE * f));
                for (r, qr) in qs.iter().enumerate() {
                    let qf = _mm512_set1_ps(qr[f]);
                    acc[0][r] = _mm512_fmadd_ps(qf, ka, acc[0][r]);
                    acc[1][r] = _mm512_fmadd_ps(qf, kb, acc[1][r]);
                }
            }
            let mut out = [[[0f32; TILE]; R]; 2];
            for t in 0..2 {
                for r in 0..R {
                    _mm512_storeu_ps(out[t][r].as_mut_ptr(), acc[t][r]);
                }
            }
            out
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    [
        tile_scores::<TILE, R>(q, stride, d, a),
        tile_scores::<TILE, R>(q, stride, d, b),
    ]
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

/// `o += w[j] * rows[j]` for each row in order, `D` values a row (a multiple of 16):
/// the output in AVX-512 registers where the build has them. The same fused
/// multiply-adds value by value, so the same bits.
#[inline(always)]
pub(super) fn weigh<const D: usize>(w: &[f32], rows: &[f32], o: &mut [f32]) {
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
        let one = tile_scores::<16, 3>(&q, 64, 64, &tile);
        assert_eq!(tile16_scores::<3>(&q, 64, 64, &tile), one);
        let other: Vec<f32> = tile.iter().map(|k| k * -1.5).collect();
        let two = tile_scores::<16, 3>(&q, 64, 64, &other);
        assert_eq!(tile16_scores2::<3>(&q, 64, 64, (&tile, &other)), [one, two]);
    }
}
