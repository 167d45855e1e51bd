//! Quantized matrix products for the block formats candle leaves without SIMD.
//!
//! candle 0.11 multiplies Q4_1, Q5_0 and Q5_1 weights with scalar Rust (`vec_dot_unopt`;
//! for the two with a Q8_1 block sum, from an f16 sum times an f16 scale where llama.cpp
//! rounds the f32 product once: 0.13-0.15 off llama.cpp's logits on the q5_1 fixtures) and
//! Q8_0 weights whose rows are not a multiple of 256 values (Gemma 3's 640-wide tied
//! output, Qwen2.5's 896-wide projections) with a one-row AVX loop; those three
//! formats are most of the decode time of the real models (`perf`: 57 % of SmolLM2's,
//! 50 % of Gemma 3's and 60 % of Qwen2.5's). The kernels here compute the same product
//! as llama.cpp: each activation row is quantized to 8 bits per block of 32 values, and
//! every weight block is multiplied in integers and scaled once.
//!
//! One binary serves many x86 CPUs: the instruction set is chosen at run time
//! ([`Level`]), AVX-512 VNNI (`vpdpbusd`, 256-bit) where present, else AVX2, else a
//! portable scalar loop (also the reference the SIMD paths are tested against, besides
//! candle's own dequantize-then-multiply). Rows are split over candle's barrier pool,
//! whose threads stay warm between tokens. Q4_K and Q6_K have tile kernels for prompts,
//! on activations quantized as llama.cpp's `Q8_K` ([`Q8KBlock`]) with the sub-blocks'
//! scales applied in integers; their single tokens stay on candle, whose repacked
//! AVX-512 kernels sum as llama.cpp's do.
//!
//! The 32-value formats are batch-invariant: the single-row kernel sums in the tile
//! kernel's order, so a row's result does not depend on how many rows came with it.
//!
//! Weights are read in place, in GGUF's block layout, from the bytes candle loaded:
//! nothing is repacked or copied. A prompt (several activation rows) goes [`TILE`] (8)
//! rows at a time ([`ActTile`], [`KTile`]): each weight block is decoded once for them
//! all, and the activations are laid out so that a decoded block meets several rows in
//! one integer dot product.
//!
//! The files, one job each: `blocks.rs` the weight formats' layouts and unpacking,
//! `activations.rs` the quantized activation rows and tiles, `scalar.rs` the portable
//! reference kernels, `x86/` the SIMD kernels, `schedule.rs` the split over the thread
//! pool, `dispatch.rs` the choice of kernel; here the entry point, [`matmul`], and the
//! choice of instruction set, [`Level`].

use std::sync::OnceLock;

mod activations;
mod blocks;
mod dispatch;
mod scalar;
mod schedule;
#[cfg(test)]
mod test_util;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use activations::{
    quantize_activations, quantize_q8k, ActBlock, ActTile, KTile, OrderedKTile, Q8KBlock, TILE,
};
pub use blocks::{Format, QK, QK_K};
pub use dispatch::K_TILE_ROWS;
pub use scalar::{dot_q4k_ordered, dot_scalar, dot_scalar_k};

/// The instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Level {
    /// What this CPU supports, best first.
    pub fn available() -> Vec<Level> {
        let mut v = vec![Level::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                v.push(Level::Avx2);
                if std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    v.push(Level::Avx512Vnni);
                }
            }
        }
        v.reverse();
        v
    }

    /// The best available level, unless `ZOO_KERNELS` (`scalar`, `avx2`, `vnni`) asks for
    /// a lower one (for benchmarks and tests). Detected once.
    pub fn detected() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = Level::available()[0];
            let asked = match std::env::var("ZOO_KERNELS").ok().as_deref() {
                Some("scalar") => Level::Scalar,
                Some("avx2") => Level::Avx2,
                Some("vnni") => Level::Avx512Vnni,
                _ => best,
            };
            let level = asked.min(best);
            tracing::debug!(?level, "quantized kernels");
            level
        })
    }
}

/// The error of a product whose shapes do not fit.
#[derive(Debug, thiserror::Error)]
#[error("quantized matmul: {0}")]
pub struct ShapeError(String);

/// `out[i, j] = sum_k x[i, k] * w[j, k]` for an `m x k` activation `x` and an `n x k`
/// weight `w` stored as `format` blocks, row after row. Rows of `w` are split over
/// candle's thread pool.
pub fn matmul(
    level: Level,
    format: Format,
    w: &[u8],
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    out: &mut [f32],
) -> Result<(), ShapeError> {
    product(level, format, w, (m, k, n), x, out, false)
}

/// [`matmul`] whose every output row is the same bits whatever rows come with it: the
/// 32-value formats are so already; Q4_K takes llama.cpp's single-row order (what
/// [`matmul`] does below [`K_TILE_ROWS`] rows) for any number of rows, Q6_K its tile
/// kernel (a lone row padded with zero rows, which add nothing). The batched forward
/// uses it, so a sequence's logits do not depend on the batch it ran in.
pub fn matmul_rows(
    level: Level,
    format: Format,
    w: &[u8],
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    out: &mut [f32],
) -> Result<(), ShapeError> {
    product(level, format, w, (m, k, n), x, out, true)
}

fn product(
    level: Level,
    format: Format,
    w: &[u8],
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    out: &mut [f32],
    row_invariant: bool,
) -> Result<(), ShapeError> {
    let bv = format.block_values();
    if k % bv != 0 {
        return Err(ShapeError(format!(
            "rows of {k} values are not whole blocks of {bv}"
        )));
    }
    let row_bytes = format.row_bytes(k);
    if w.len() != n * row_bytes || x.len() != m * k || out.len() != m * n {
        return Err(ShapeError(format!(
            "expected a {n}x{k} {format:?} weight ({} bytes), {m}x{k} input, {m}x{n} output; \
             got {} bytes, {} inputs, {} outputs",
            n * row_bytes,
            w.len(),
            x.len(),
            out.len()
        )));
    }
    if bv == QK_K {
        dispatch::matmul_k(level, format, w, (m, k, n), x, out, row_invariant);
    } else {
        dispatch::matmul_32(level, format, w, (m, k, n), x, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_say_what_was_expected() {
        let mut out = vec![0f32; 2];
        let e = matmul(
            Level::Scalar,
            Format::Q8_0,
            &[0u8; 34],
            (1, 33, 2),
            &[0.0; 33],
            &mut out,
        )
        .unwrap_err();
        assert!(e.to_string().contains("blocks of 32"), "{e}");
        let e = matmul(
            Level::Scalar,
            Format::Q8_0,
            &[0u8; 34],
            (1, 32, 2),
            &[0.0; 32],
            &mut out,
        )
        .unwrap_err();
        assert!(e.to_string().contains("68 bytes"), "{e}");
    }
}
