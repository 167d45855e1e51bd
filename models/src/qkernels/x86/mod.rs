//! AVX2 and AVX-512 VNNI row kernels. Both are stamped from one macro and differ only
//! in the integer dot product of 32 unsigned weight bytes with 32 signed activation
//! bytes: `vpmaddubsw` + `vpmaddwd` on AVX2, one `vpdpbusd` with VNNI. Neither can
//! saturate here: weights are at most 31 (Q4/Q5) or |128| (Q8_0, sign moved onto the
//! activation), activations at most |127|, so a pair sums to at most 32 512; VNNI's
//! tile kernel takes Q8_0's weights + 128 (up to 255) instead, `vpdpbusd` summing
//! into 32 bits.
//!
//! The kernels are written once, as macros stamped into one module per instruction set
//! by `kernels!`: `tile32.rs` for the formats with blocks of 32 values, `kquants.rs`
//! for Q4_K and Q6_K; this file holds the entry points, which check bounds and pick the
//! module of the detected level.

use super::blocks::{q4k_scale_min, q4k_scales_mins};
use super::scalar::{q4k_step, q8k_sub_sum};
use super::{ActBlock, ActTile, Format, KTile, Level, OrderedKTile, Q8KBlock, QK, QK_K, TILE};
use std::arch::x86_64::*;

#[macro_use]
mod kquants;
#[macro_use]
mod tile32;

/// How far ahead of the row being summed the row kernels ask the memory for weights, in
/// rows. A decode step streams every weight once from memory, and the hardware's own
/// prefetch left the kernels waiting on it. Single-sequence decode, tok/s before / two
/// rows ahead / six / twelve / six or 6 KiB if more (alternating runs, quiet machine):
/// SmolLM2 Q4_1 92-100 / 122-124 / 138-145 / 150-155 / 140-147, Gemma 3 Q4_K_M
/// 43-44 / 57 / 60-65 / 59-60 / 63-64, Qwen2.5 Q4_K_M 26.5 / 34.2 / 35.4-37.4 /
/// 36.3-36.6 / 35.9-36.6.
const PREFETCH_ROWS: usize = 6;

/// The distance ahead, in bytes, for rows of `row_bytes`.
#[inline(always)]
fn prefetch_distance(row_bytes: usize) -> usize {
    PREFETCH_ROWS * row_bytes
}

/// Asks for the `bytes` from `p` to be brought into the cache. A hint: it never faults,
/// so `p` may lie past the weights (the last rows' look-ahead).
#[inline(always)]
fn prefetch(p: *const u8, bytes: usize) {
    let mut line = 0;
    while line < bytes {
        // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever
        // the address; `wrapping_add` forms the address without pointer arithmetic's
        // in-bounds requirement.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line) as *const i8) };
        line += 64;
    }
}

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

/// `dst[r][i] = row r of w . activation row i` for Q4_K weight rows and the [`TILE`]
/// activation rows of `act`, each row summed as [`dot_rows_q4k`] sums it alone.
pub(super) fn dot_rows_q4k_tile(
    level: Level,
    w: &[u8],
    row_bytes: usize,
    act: &[OrderedKTile],
    dst: &mut [[f32; TILE]],
) {
    assert!(
        w.len() >= dst.len() * row_bytes && row_bytes >= Format::Q4K.row_bytes(act.len() * QK_K)
    );
    // SAFETY: as in `dot_rows`.
    unsafe {
        match level {
            Level::Avx512Vnni => vnni::rows_q4k_tile(w.as_ptr(), row_bytes, act, dst),
            Level::Avx2 => avx2::rows_q4k_tile(w.as_ptr(), row_bytes, act, dst),
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
const Q5_1: u8 = 6;

/// Bytes per block of the 32-value format `F`.
const fn block_bytes_32(f: u8) -> usize {
    match f {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    }
}

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

/// One module `$name` of kernels compiled for `$features`, `$dot`, `$dacc` and `$wdot`
/// being its integer dot products (the macros above).
macro_rules! kernels {
    ($name:ident, $features:literal, $dot:ident, $dacc:ident, $wdot:ident, $q8_unsigned:literal) => {
        mod $name {
            use super::*;

            kernels_32!($features, $dot, $dacc, $q8_unsigned);
            kernels_k!($features, $dot, $dacc, $wdot);

            /// The integer dots of a decoded 32-value weight block with the [`TILE`]
            /// rows of `qt` (laid out as [`ActTile::qt`]): `u` the weight's values as
            /// unsigned bytes, `q` its raw bytes for Q8_0's sign trick (`signed`).
            /// `vpshufd` spreads 4 weight values of each half of the block over its
            /// half of the register; one integer dot product then meets them with the
            /// same values of 4 rows. Lanes `(row, half)`: rows 0-3 in the first
            /// register, 4-7 in the second.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile_dots(
                u: __m256i,
                q: __m256i,
                signed: bool,
                qt: &[[i8; QK]; 8],
            ) -> [__m256i; 2] {
                let mut sums = [_mm256_setzero_si256(); 2];
                macro_rules! step {
                    ($c:literal) => {
                        let wq = _mm256_shuffle_epi32(u, $c * 0x55);
                        for g in 0..2 {
                            let a = _mm256_load_si256(qt[2 * $c + g].as_ptr() as *const __m256i);
                            let a = if signed {
                                _mm256_sign_epi8(a, _mm256_shuffle_epi32(q, $c * 0x55))
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
                sums
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
        }
    };
}

kernels!(avx2, "avx2,fma,f16c", dot_avx2, dacc_avx2, wdot_avx2, false);
kernels!(
    vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    dot_vnni,
    dacc_vnni,
    wdot_vnni,
    true
);
