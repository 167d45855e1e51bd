//! AVX2 and AVX-512 VNNI row kernels. Both are stamped from one macro and differ only
//! in the integer dot product of 32 unsigned weight bytes with 32 signed activation
//! bytes: `vpmaddubsw` + `vpmaddwd` on AVX2, one `vpdpbusd` with VNNI. Neither can
//! saturate here: weights are at most 31 (Q4/Q5) or |128| (Q8_0, sign moved onto the
//! activation), activations at most |127|, so a pair sums to at most 32 512.

use super::{ActBlock, ActTile, Format, KTile, Level, Q8KBlock, QK, QK_K, TILE};
use std::arch::x86_64::*;

pub(super) fn dot_rows(
    level: Level,
    format: Format,
    w: &[u8],
    row_bytes: usize,
    act: &[ActBlock],
    dst: &mut [f32],
) {
    assert!(w.len() >= dst.len() * row_bytes && row_bytes >= format.row_bytes(act.len() * QK));
    // SAFETY: `level` comes from `Level::available()` (runtime detection); the
    // assertion bounds every block read.
    unsafe {
        match level {
            Level::Avx512Vnni => vnni::dot_rows(format, w, row_bytes, act, dst),
            Level::Avx2 => avx2::dot_rows(format, w, row_bytes, act, dst),
            Level::Scalar => unreachable!("the scalar level has no x86 kernel"),
        }
    }
}

/// `dst[r][i] = row r of w . activation row i` for the [`TILE`] activation rows of
/// `act` (one [`ActTile`] per block): every weight block is decoded once for them all.
pub(super) fn dot_rows_tile(
    level: Level,
    format: Format,
    w: &[u8],
    row_bytes: usize,
    act: &[ActTile],
    dst: &mut [[f32; TILE]],
) {
    assert!(w.len() >= dst.len() * row_bytes && row_bytes >= format.row_bytes(act.len() * QK));
    // SAFETY: as in `dot_rows`.
    unsafe {
        match level {
            Level::Avx512Vnni => vnni::dot_rows_tile(format, w, row_bytes, act, dst),
            Level::Avx2 => avx2::dot_rows_tile(format, w, row_bytes, act, dst),
            Level::Scalar => unreachable!("the scalar level has no x86 kernel"),
        }
    }
}

/// `dst[r][i] = row r of w . activation row i` for a K-quant weight and the [`TILE`]
/// activation rows of `act` (one [`KTile`] per super-block).
pub(super) fn dot_rows_ktile(
    level: Level,
    format: Format,
    w: &[u8],
    row_bytes: usize,
    act: &[KTile],
    dst: &mut [[f32; TILE]],
) {
    assert!(w.len() >= dst.len() * row_bytes && row_bytes >= format.row_bytes(act.len() * QK_K));
    // SAFETY: as in `dot_rows`.
    unsafe {
        match (level, format) {
            (Level::Avx512Vnni, Format::Q4K) => {
                vnni::rows_ktile::<Q4K>(w.as_ptr(), row_bytes, act, dst)
            }
            (Level::Avx512Vnni, Format::Q6K) => {
                vnni::rows_ktile::<Q6K>(w.as_ptr(), row_bytes, act, dst)
            }
            (Level::Avx2, Format::Q4K) => avx2::rows_ktile::<Q4K>(w.as_ptr(), row_bytes, act, dst),
            (Level::Avx2, Format::Q6K) => avx2::rows_ktile::<Q6K>(w.as_ptr(), row_bytes, act, dst),
            _ => unreachable!("no K-quant tile kernel for {level:?} {format:?}"),
        }
    }
}

/// `dst[r] = row r of w . act` for Q4_K weight rows and one activation row, summed as
/// [`super::dot_q4k_ordered`] (llama.cpp's repacked order), four rows at a time.
pub(super) fn dot_rows_q4k(
    level: Level,
    w: &[u8],
    row_bytes: usize,
    act: &[Q8KBlock],
    dst: &mut [f32],
) {
    assert!(
        w.len() >= dst.len() * row_bytes && row_bytes >= Format::Q4K.row_bytes(act.len() * QK_K)
    );
    // SAFETY: as in `dot_rows`.
    unsafe {
        match level {
            Level::Avx512Vnni => vnni::rows_q4k(w.as_ptr(), row_bytes, act, dst),
            Level::Avx2 => avx2::rows_q4k(w.as_ptr(), row_bytes, act, dst),
            Level::Scalar => unreachable!("the scalar level has no x86 kernel"),
        }
    }
}

/// Format numbers for the const-generic tile kernel.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q8_0: u8 = 3;
const Q4K: u8 = 4;
const Q6K: u8 = 5;

macro_rules! dot_avx2 {
    ($u:expr, $s:expr) => {
        _mm256_madd_epi16(_mm256_maddubs_epi16($u, $s), _mm256_set1_epi16(1))
    };
}

macro_rules! dot_vnni {
    ($u:expr, $s:expr) => {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), $u, $s)
    };
}

/// `acc + (quads of u8 in u) . (quads of i8 in s)`, in i32 lanes.
macro_rules! dacc_avx2 {
    ($acc:expr, $u:expr, $s:expr) => {
        _mm256_add_epi32($acc, dot_avx2!($u, $s))
    };
}

macro_rules! dacc_vnni {
    ($acc:expr, $u:expr, $s:expr) => {
        _mm256_dpbusd_epi32($acc, $u, $s)
    };
}

/// `acc + (pairs of i16 in x) . (pairs of i16 in w)`, in i32 lanes.
macro_rules! wdot_avx2 {
    ($acc:expr, $x:expr, $w:expr) => {
        _mm256_add_epi32($acc, _mm256_madd_epi16($x, $w))
    };
}

macro_rules! wdot_vnni {
    ($acc:expr, $x:expr, $w:expr) => {
        _mm256_dpwssd_epi32($acc, $x, $w)
    };
}

macro_rules! kernels {
    ($name:ident, $features:literal, $dot:ident, $dacc:ident, $wdot:ident) => {
        mod $name {
            use super::*;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn dot_rows(
                format: Format,
                w: &[u8],
                row_bytes: usize,
                act: &[ActBlock],
                dst: &mut [f32],
            ) {
                let base = w.as_ptr();
                for (r, d) in dst.iter_mut().enumerate() {
                    let row = base.add(r * row_bytes);
                    *d = match format {
                        Format::Q4_0 => row_ordered::<Q4_0>(row, act),
                        Format::Q4_1 => row_ordered::<Q4_1>(row, act),
                        Format::Q5_0 => row_ordered::<Q5_0>(row, act),
                        Format::Q8_0 => row_ordered::<Q8_0>(row, act),
                        Format::Q4K | Format::Q6K => {
                            unreachable!("K-quants take matmul_k")
                        }
                    };
                }
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn dot_rows_tile(
                format: Format,
                w: &[u8],
                row_bytes: usize,
                act: &[ActTile],
                dst: &mut [[f32; TILE]],
            ) {
                let w = w.as_ptr();
                match format {
                    Format::Q4_0 => rows_tile::<Q4_0>(w, row_bytes, act, dst),
                    Format::Q4_1 => rows_tile::<Q4_1>(w, row_bytes, act, dst),
                    Format::Q5_0 => rows_tile::<Q5_0>(w, row_bytes, act, dst),
                    Format::Q8_0 => rows_tile::<Q8_0>(w, row_bytes, act, dst),
                    Format::Q4K | Format::Q6K => {
                        unreachable!("K-quants take matmul_k")
                    }
                }
            }

            /// One weight block as unsigned bytes (`u`), the raw signed bytes for Q8_0's
            /// sign trick (`q`), the block scale and the coefficient of the activation
            /// sum (the offset of the 4- and 5-bit formats).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn decode<const F: u8>(p: *const u8) -> (__m256i, __m256i, f32, f32) {
                match F {
                    Q4_0 => {
                        let d = f16(p);
                        let u = nibbles(p.add(2));
                        (u, u, d, -8.0 * d)
                    }
                    Q4_1 => {
                        let u = nibbles(p.add(4));
                        (u, u, f16(p), f16(p.add(2)))
                    }
                    Q5_0 => {
                        let d = f16(p);
                        let u = _mm256_or_si256(nibbles(p.add(6)), q5_high(p.add(2)));
                        (u, u, d, -16.0 * d)
                    }
                    _ => {
                        let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
                        (_mm256_sign_epi8(q, q), q, f16(p), 0.0)
                    }
                }
            }

            /// [`TILE`] activation rows against `dst.len()` weight rows of format `F`
            /// (blocks of 32 values). `vpshufd` spreads 4 weight values of each half of
            /// the decoded block over its half of the register; one integer dot product
            /// then meets them with the same values of 4 rows ([`ActTile::qt`]). Two
            /// accumulators hold rows 0-3 and 4-7 (each row twice, once per half),
            /// scaled by the rows' scales in one multiply each: no per-row broadcast and
            /// one horizontal step per weight row.
            #[target_feature(enable = $features)]
            unsafe fn rows_tile<const F: u8>(
                w: *const u8,
                row_bytes: usize,
                act: &[ActTile],
                dst: &mut [[f32; TILE]],
            ) {
                let signed = F == Q8_0;
                let bb = [18, 20, 22, 34][F as usize];
                macro_rules! quads {
                    ($v:expr, $c:literal) => {
                        _mm256_shuffle_epi32($v, $c * 0x55)
                    };
                }
                let n = act.len();
                for (r, d) in dst.iter_mut().enumerate() {
                    let row = w.add(r * row_bytes);
                    // acc[j][g]: blocks b = j (mod 4), rows 4g..4g+3 (lanes: row, half).
                    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                    // The offset terms of the rows, by the same phases.
                    let mut off = [_mm256_setzero_ps(); 4];
                    macro_rules! block {
                        ($b:expr, $j:literal) => {
                            let t = &act[$b];
                            let (u, q, dw, offc) = decode::<F>(row.add($b * bb));
                            let mut sums = [_mm256_setzero_si256(); 2];
                            macro_rules! step {
                                ($c:literal) => {
                                    let wq = quads!(u, $c);
                                    for g in 0..2 {
                                        let a = _mm256_load_si256(
                                            t.qt[2 * $c + g].as_ptr() as *const __m256i
                                        );
                                        let a = if signed {
                                            _mm256_sign_epi8(a, quads!(q, $c))
                                        } else {
                                            a
                                        };
                                        sums[g] = $dacc!(sums[g], wq, a);
                                    }
                                };
                            }
                            step!(0);
                            step!(1);
                            step!(2);
                            step!(3);
                            let dw = _mm256_set1_ps(dw);
                            for g in 0..2 {
                                let scale = _mm256_mul_ps(dw, _mm256_load_ps(t.d[g].as_ptr()));
                                acc[$j][g] =
                                    _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[g]), acc[$j][g]);
                            }
                            if !signed {
                                off[$j] = _mm256_fmadd_ps(
                                    _mm256_set1_ps(offc),
                                    _mm256_load_ps(t.s.as_ptr()),
                                    off[$j],
                                );
                            }
                        };
                    }
                    let mut b = 0;
                    while b + 4 <= n {
                        block!(b, 0);
                        block!(b + 1, 1);
                        block!(b + 2, 2);
                        block!(b + 3, 3);
                        b += 4;
                    }
                    if b < n {
                        block!(b, 0);
                    }
                    if b + 1 < n {
                        block!(b + 1, 1);
                    }
                    if b + 2 < n {
                        block!(b + 2, 2);
                    }
                    // Per row: ((phases 0+1) + (2+3)) of each half, the halves added, then
                    // the offsets' phases likewise (row_ordered sums the same way).
                    macro_rules! phases {
                        ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
                            _mm256_add_ps(_mm256_add_ps($v0, $v1), _mm256_add_ps($v2, $v3))
                        };
                    }
                    let s0 = phases!(acc[0][0], acc[1][0], acc[2][0], acc[3][0]);
                    let s1 = phases!(acc[0][1], acc[1][1], acc[2][1], acc[3][1]);
                    // Rows 0-3 from the halves of s0, rows 4-7 from those of s1.
                    let low = _mm256_permute2f128_ps(s0, s1, 0x20);
                    let high = _mm256_permute2f128_ps(s0, s1, 0x31);
                    _mm256_storeu_ps(
                        d.as_mut_ptr(),
                        _mm256_add_ps(
                            _mm256_add_ps(low, high),
                            phases!(off[0], off[1], off[2], off[3]),
                        ),
                    );
                }
            }

            /// The 8 sub-block dot products of a Q4_K super-block with an activation
            /// super-block (exact integers).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn q4k_dots(sb: *const u8, a: &Q8KBlock) -> [i32; 8] {
                let low4 = _mm256_set1_epi8(0x0F);
                let mut d = [_mm256_setzero_si256(); 8];
                for c in 0..4 {
                    let raw = _mm256_loadu_si256(sb.add(16 + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(raw, low4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                    let a0 = _mm256_loadu_si256(a.qs.as_ptr().add(64 * c) as *const __m256i);
                    let a1 = _mm256_loadu_si256(a.qs.as_ptr().add(64 * c + 32) as *const __m256i);
                    d[2 * c] = $dot!(lo, a0);
                    d[2 * c + 1] = $dot!(hi, a1);
                }
                // Lanes of sub-block j summed: [0..3] then [4..7] by two rounds of
                // horizontal adds and one add of the 128-bit halves.
                let h0 =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
                let h1 =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(d[4], d[5]), _mm256_hadd_epi32(d[6], d[7]));
                let s0 = _mm_add_epi32(_mm256_castsi256_si128(h0), _mm256_extracti128_si256(h0, 1));
                let s1 = _mm_add_epi32(_mm256_castsi256_si128(h1), _mm256_extracti128_si256(h1, 1));
                let mut out = [0i32; 8];
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, _mm256_set_m128i(s1, s0));
                out
            }

            /// Q4_K rows against one activation row in [`super::super::q4k_step`]'s
            /// order; four rows' chains interleaved so their latencies overlap.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn rows_q4k(
                w: *const u8,
                row_bytes: usize,
                act: &[Q8KBlock],
                dst: &mut [f32],
            ) {
                const G: usize = 4;
                let n = dst.len();
                let mut r0 = 0;
                while r0 < n {
                    // The last group repeats its last row where fewer than G are left.
                    let rows: [usize; G] = std::array::from_fn(|i| (r0 + i).min(n - 1));
                    let mut acc = [0f32; G];
                    for (b, a) in act.iter().enumerate() {
                        let sbs: [*const u8; G] = rows.map(|r| w.add(r * row_bytes + b * 144));
                        let dots = sbs.map(|sb| q4k_dots(sb, a));
                        let scales = sbs.map(|sb| {
                            super::super::q4k_scales_mins(std::slice::from_raw_parts(sb.add(4), 12))
                        });
                        let d = sbs.map(|sb| f16(sb));
                        let dmin = sbs.map(|sb| f16(sb.add(2)));
                        for j in 0..8 {
                            let bsum = super::super::q8k_sub_sum(a, j);
                            for i in 0..G {
                                let (sc, mn) = (scales[i].0[j], scales[i].1[j]);
                                acc[i] = super::super::q4k_step(
                                    acc[i],
                                    dots[i][j],
                                    d[i] * sc as f32,
                                    dmin[i] * mn as f32,
                                    a.d,
                                    bsum,
                                );
                            }
                        }
                    }
                    for i in 0..G.min(n - r0) {
                        dst[r0 + i] = acc[i];
                    }
                    r0 += G;
                }
            }

            /// [`TILE`] activation rows against `dst.len()` K-quant weight rows, a
            /// super-block at a time as llama.cpp's K-quant kernels do: the sub-blocks'
            /// 4- or 6-bit values multiplied with the 8-bit activations in pairs
            /// (`vpmaddubsw`, unsigned by signed, to i16), weighed by their integer
            /// scales in i32 (`vpmaddwd` / `vpdpwssd`), and converted to float once per
            /// super-block and row. The mins (Q4_K) and the -32 offset (Q6_K) are
            /// integer products of the weight's scales with the activations' partial
            /// sums, for all rows at once.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn rows_ktile<const F: u8>(
                w: *const u8,
                row_bytes: usize,
                act: &[KTile],
                dst: &mut [[f32; TILE]],
            ) {
                const SUBS: usize = QK_K / QK;
                let low4 = _mm256_set1_epi8(0x0F);
                let bb = if F == Q4K { 144 } else { 210 };
                for (r, d) in dst.iter_mut().enumerate() {
                    let row = w.add(r * row_bytes);
                    let mut acc = [_mm256_setzero_ps(); TILE];
                    // The min / offset terms of the rows, one lane each.
                    let mut off = _mm256_setzero_ps();
                    for (b, t) in act.iter().enumerate() {
                        let sb = row.add(b * bb);
                        let mut u = [_mm256_setzero_si256(); SUBS];
                        let mut sc = [_mm256_setzero_si256(); SUBS];
                        let da = _mm256_loadu_ps(t.d.as_ptr());
                        let dd;
                        if F == Q4K {
                            let scales = std::slice::from_raw_parts(sb.add(4), 12);
                            let mut mins = _mm256_setzero_si256();
                            for p in 0..SUBS / 2 {
                                let (s0, m0) = super::super::q4k_scale_min(scales, 2 * p);
                                let (s1, m1) = super::super::q4k_scale_min(scales, 2 * p + 1);
                                sc[2 * p] = _mm256_set1_epi16(s0 as i16);
                                sc[2 * p + 1] = _mm256_set1_epi16(s1 as i16);
                                let raw = _mm256_loadu_si256(sb.add(16 + p * 32) as *const __m256i);
                                u[2 * p] = _mm256_and_si256(raw, low4);
                                u[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                                let pair = _mm256_set1_epi32((m0 as i32) | (m1 as i32) << 16);
                                let sums =
                                    _mm256_load_si256(t.sums32[p].as_ptr() as *const __m256i);
                                mins = $wdot!(mins, sums, pair);
                            }
                            dd = _mm256_mul_ps(_mm256_set1_ps(f16(sb)), da);
                            let dmin = _mm256_mul_ps(_mm256_set1_ps(f16(sb.add(2))), da);
                            off = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(mins), off);
                        } else {
                            let scales = sb.add(192) as *const i8;
                            let mut corr = _mm256_setzero_si256();
                            for j in 0..SUBS {
                                let (h, q) = (j / 4, j % 4);
                                let ql = _mm256_loadu_si256(
                                    sb.add(h * 64 + (q % 2) * 32) as *const __m256i
                                );
                                let ql = if q < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
                                let qh = _mm256_loadu_si256(sb.add(128 + h * 32) as *const __m256i);
                                let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * q as i32));
                                let high =
                                    _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(3)), 4);
                                u[j] = _mm256_or_si256(_mm256_and_si256(ql, low4), high);
                                let (lo, hi) =
                                    (*scales.add(2 * j) as i16, *scales.add(2 * j + 1) as i16);
                                // maddubs lanes 0-7 hold values 0-15, lanes 8-15 values 16-31.
                                sc[j] = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
                                let pair =
                                    _mm256_set1_epi32((lo as u16 as i32) | (hi as i32) << 16);
                                let sums =
                                    _mm256_load_si256(t.sums16[j].as_ptr() as *const __m256i);
                                corr = $wdot!(corr, sums, pair);
                            }
                            // Values are stored plus 32: take 32 * scale * sum back off.
                            dd = _mm256_mul_ps(_mm256_set1_ps(f16(sb.add(208))), da);
                            let d32 = _mm256_mul_ps(dd, _mm256_set1_ps(32.0));
                            off = _mm256_fnmadd_ps(d32, _mm256_cvtepi32_ps(corr), off);
                        }
                        for i in 0..TILE {
                            let mut isum = _mm256_setzero_si256();
                            for j in 0..SUBS {
                                let a = _mm256_load_si256(t.qs[j][i].as_ptr() as *const __m256i);
                                isum = $wdot!(isum, _mm256_maddubs_epi16(u[j], a), sc[j]);
                            }
                            let di = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(i as i32));
                            acc[i] = _mm256_fmadd_ps(di, _mm256_cvtepi32_ps(isum), acc[i]);
                        }
                    }
                    let mut offs = [0f32; TILE];
                    _mm256_storeu_ps(offs.as_mut_ptr(), off);
                    for i in 0..TILE {
                        d[i] = hsum(acc[i]) + offs[i];
                    }
                }
            }

            /// Q5_0's fifth bits (`qh`, 32 bits) as 0x10 in the byte of each value set.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn q5_high(qh: *const u8) -> __m256i {
                // Byte j of the result is 0x10 where bit j of `qh` is set: replicate byte
                // j / 8 of `qh` into byte j, set every other bit, compare with all ones.
                let spread = _mm256_setr_epi64x(
                    0x0000_0000_0000_0000,
                    0x0101_0101_0101_0101,
                    0x0202_0202_0202_0202,
                    0x0303_0303_0303_0303,
                );
                let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
                let qh = (qh as *const i32).read_unaligned();
                let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
                let high =
                    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
                _mm256_and_si256(high, _mm256_set1_epi8(0x10))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn f16(p: *const u8) -> f32 {
                let bits = (p as *const u16).read_unaligned();
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
            }

            /// 16 bytes of nibbles to 32 bytes: low nibbles are values 0..16, high 16..32.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn nibbles(p: *const u8) -> __m256i {
                let raw = _mm_loadu_si128(p as *const __m128i);
                _mm256_and_si256(
                    _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw),
                    _mm256_set1_epi8(0x0F),
                )
            }

            /// One weight row against one activation row, summed in exactly the order
            /// of [`rows_tile`] for each of its rows (see there), so that a prompt gives
            /// the same logits whether it goes in at once or a token at a time: four
            /// blocks at a time, their dot products reduced to the sums of each half
            /// (`vphaddd`: lanes `[L0..L3 | H0..H3]`), scaled into the four phases.
            #[target_feature(enable = $features)]
            unsafe fn row_ordered<const F: u8>(row: *const u8, act: &[ActBlock]) -> f32 {
                let signed = F == Q8_0;
                let bb = [18, 20, 22, 34][F as usize];
                let n = act.len();
                let mut acc = _mm256_setzero_ps();
                let mut off = _mm_setzero_ps();
                let mut b = 0;
                while b < n {
                    let mut dots = [_mm256_setzero_si256(); 4];
                    let (mut k, mut o, mut s) = ([0f32; 4], [0f32; 4], [0f32; 4]);
                    for j in 0..4.min(n - b) {
                        let a = &act[b + j];
                        let (u, q, dw, offc) = decode::<F>(row.add((b + j) * bb));
                        let y = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                        let y = if signed { _mm256_sign_epi8(y, q) } else { y };
                        dots[j] = $dot!(u, y);
                        k[j] = dw * a.d;
                        o[j] = offc;
                        s[j] = a.s;
                    }
                    let halves = _mm256_hadd_epi32(
                        _mm256_hadd_epi32(dots[0], dots[1]),
                        _mm256_hadd_epi32(dots[2], dots[3]),
                    );
                    let k = _mm_loadu_ps(k.as_ptr());
                    acc = _mm256_fmadd_ps(_mm256_set_m128(k, k), _mm256_cvtepi32_ps(halves), acc);
                    if !signed {
                        off = _mm_fmadd_ps(_mm_loadu_ps(o.as_ptr()), _mm_loadu_ps(s.as_ptr()), off);
                    }
                    b += 4;
                }
                // [(L0+L1)+(L2+L3), (H0+H1)+(H2+H3), ..] as rows_tile combines the phases.
                let h = _mm_hadd_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let h = _mm_hadd_ps(h, h);
                let o = _mm_hadd_ps(off, off);
                let o = _mm_hadd_ps(o, o);
                (_mm_cvtss_f32(h) + _mm_cvtss_f32(_mm_shuffle_ps(h, h, 1))) + _mm_cvtss_f32(o)
            }
        }
    };
}

kernels!(avx2, "avx2,fma,f16c", dot_avx2, dacc_avx2, wdot_avx2);
kernels!(
    vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    dot_vnni,
    dacc_vnni,
    wdot_vnni
);
