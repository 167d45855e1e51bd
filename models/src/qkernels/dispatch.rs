//! Which kernel computes what: [`matmul_32`] and [`matmul_k`] quantize the
//! activations, build the prompt tiles, and run each unit of weight rows through the
//! tile kernels ([`TILE`] activation rows at a time) or the single-row kernels of the
//! chosen [`Level`].

use super::schedule::{
    build_tiles, for_each_unit, quantize_rows, tile_groups, tiles_then_rows, worth_the_pool,
    UNIT_ROWS,
};
use super::{
    dot_q4k_ordered, dot_scalar, dot_scalar_k, quantize_activations, quantize_q8k, ActBlock,
    ActTile, Format, Level, OrderedKTile, Q8KBlock, QK, QK_K, TILE,
};
#[cfg(target_arch = "x86_64")]
use super::{x86, KTile};

/// Rows from which Q4_K products take the tile kernels; fewer rows (a decode step)
/// take [`dot_q4k_ordered`]'s order.
pub const K_TILE_ROWS: usize = 32;

/// [`super::matmul`] for the formats with blocks of 32 values: activations as [`ActBlock`]s.
pub(super) fn matmul_32(
    level: Level,
    format: Format,
    w: &[u8],
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    out: &mut [f32],
) {
    let kb = k / QK;
    let row_bytes = format.row_bytes(k);
    let mut act = vec![
        ActBlock {
            d: 0.0,
            s: 0.0,
            qs: [0; QK]
        };
        m * kb
    ];
    quantize_rows(m, k, &mut act, |x, a| quantize_activations(format, x, a), x);
    // Rows in groups of TILE, block by block, for the tile kernels: each decoded weight
    // block meets TILE activation rows (prompts, batched steps).
    let groups = tile_groups(level != Level::Scalar, m);
    let zero = ActBlock {
        d: 0.0,
        s: 0.0,
        qs: [0; QK],
    };
    let mut tiles = vec![
        ActTile {
            d: [[0.0; TILE]; 2],
            s: [0.0; TILE],
            hs: [[0; TILE]; 2],
            qt: [[0; QK]; 8],
        };
        groups * kb
    ];
    build_tiles(groups, &mut tiles, m * k >= 1 << 15, |g, t| {
        for (b, t) in t.iter_mut().enumerate() {
            *t = ActTile::new(std::array::from_fn(|i| match TILE * g + i {
                r if r < m => &act[r * kb + b],
                _ => &zero,
            }));
        }
    });
    let (act, tiles) = (&act, &tiles);
    for_each_unit(m, n, out, worth_the_pool(m, k, n), |rows, out| {
        let wr = &w[rows.start * row_bytes..rows.end * row_bytes];
        tiles_then_rows(
            (m, groups, rows.len()),
            out,
            |g, dst| tile_kernel(level, format, wr, row_bytes, &tiles[g * kb..][..kb], dst),
            |i, dst| dot_rows(level, format, wr, row_bytes, &act[i * kb..][..kb], dst),
        );
    });
}

/// [`x86::dot_rows_tile`] where there is one (no tiles are made at other levels).
fn tile_kernel(
    level: Level,
    format: Format,
    w: &[u8],
    row_bytes: usize,
    act: &[ActTile],
    dst: &mut [[f32; TILE]],
) {
    #[cfg(target_arch = "x86_64")]
    x86::dot_rows_tile(level, format, w, row_bytes, act, dst);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no tile kernel at {level:?} for {format:?} ({row_bytes}, {}, {})",
        w.len() + act.len(),
        dst.len()
    );
}

/// [`super::matmul`] for Q4_K and Q6_K: activations as [`Q8KBlock`]s, as llama.cpp's K-quant
/// dot products take them. The SIMD levels go [`TILE`] rows at a time only (the rows
/// left over in one more tile, padded with zero rows, which add nothing). Q4_K's
/// decode steps (fewer than [`K_TILE_ROWS`] rows) take llama.cpp's single-row order,
/// and so does every row when `row_invariant` (each row alone, whatever the rows).
pub(super) fn matmul_k(
    level: Level,
    format: Format,
    w: &[u8],
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    out: &mut [f32],
    row_invariant: bool,
) {
    let kb = k / QK_K;
    let row_bytes = format.row_bytes(k);
    let mut act = vec![Q8KBlock::ZERO; m * kb];
    quantize_rows(m, k, &mut act, quantize_q8k, x);
    if format == Format::Q4K && (m < K_TILE_ROWS || row_invariant) {
        // Each row in the single-row order: TILE rows at a time through the ordered
        // tile kernel, a single row left over alone.
        let groups = tile_groups(level != Level::Scalar, m);
        let zero = Q8KBlock::ZERO;
        let mut tiles = vec![OrderedKTile::new([&zero; TILE]); groups * kb];
        build_tiles(groups, &mut tiles, m * k >= 1 << 15, |g, t| {
            for (b, t) in t.iter_mut().enumerate() {
                *t = OrderedKTile::new(std::array::from_fn(|i| match TILE * g + i {
                    r if r < m => &act[r * kb + b],
                    _ => &zero,
                }));
            }
        });
        let (act, tiles) = (&act, &tiles);
        for_each_unit(m, n, out, worth_the_pool(m, k, n), |rows, out| {
            let wr = &w[rows.start * row_bytes..rows.end * row_bytes];
            tiles_then_rows(
                (m, groups, rows.len()),
                out,
                |g, dst| {
                    #[cfg(target_arch = "x86_64")]
                    x86::dot_rows_q4k_tile(level, wr, row_bytes, &tiles[g * kb..][..kb], dst);
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!(
                        "no tile kernel at {level:?} ({g}, {})",
                        dst.len() + tiles.len()
                    );
                },
                |i, dst| {
                    let a = &act[i * kb..(i + 1) * kb];
                    match level {
                        #[cfg(target_arch = "x86_64")]
                        Level::Avx2 | Level::Avx512Vnni => {
                            x86::dot_rows_q4k(level, wr, row_bytes, a, dst)
                        }
                        _ => {
                            for (row, d) in wr.chunks_exact(row_bytes).zip(dst.iter_mut()) {
                                *d = dot_q4k_ordered(row, a);
                            }
                        }
                    }
                },
            );
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level != Level::Scalar {
        let groups = m.div_ceil(TILE);
        let zero = Q8KBlock::ZERO;
        let mut tiles = vec![KTile::new([&zero; TILE]); groups * kb];
        build_tiles(groups, &mut tiles, m * k >= 1 << 15, |g, t| {
            for (b, t) in t.iter_mut().enumerate() {
                *t = KTile::new(std::array::from_fn(|i| {
                    act.get((TILE * g + i) * kb + b)
                        .filter(|_| TILE * g + i < m)
                        .unwrap_or(&zero)
                }));
            }
        });
        let tiles = &tiles;
        for_each_unit(m, n, out, worth_the_pool(m, k, n), |rows, out| {
            let wr = &w[rows.start * row_bytes..rows.end * row_bytes];
            let mut tile = [[0f32; TILE]; UNIT_ROWS];
            let tile = &mut tile[..rows.len()];
            for g in 0..groups {
                x86::dot_rows_ktile(level, format, wr, row_bytes, &tiles[g * kb..][..kb], tile);
                out.put_tile(g * TILE, tile);
            }
        });
        return;
    }
    let act = &act;
    for_each_unit(m, n, out, worth_the_pool(m, k, n), |rows, out| {
        for (r, row) in w[rows.start * row_bytes..rows.end * row_bytes]
            .chunks_exact(row_bytes)
            .enumerate()
        {
            for i in 0..m {
                out.put(i, r, dot_scalar_k(format, row, &act[i * kb..(i + 1) * kb]));
            }
        }
    });
}

/// `dst[r] = row r of w . act` for consecutive rows of `row_bytes` bytes.
fn dot_rows(
    level: Level,
    format: Format,
    w: &[u8],
    row_bytes: usize,
    act: &[ActBlock],
    dst: &mut [f32],
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512Vnni => x86::dot_rows(level, format, w, row_bytes, act, dst),
        _ => {
            for (row, d) in w.chunks_exact(row_bytes).zip(dst.iter_mut()) {
                *d = dot_scalar(format, row, act);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::qkernels::test_util::{bits, candle_product, formats, k_formats, pseudo_normal};
    use crate::qkernels::{matmul, Format, Level};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Every available level against candle's dequantize-then-multiply (f32) product and
    /// against the scalar kernel, on shapes with a ragged last unit of rows and several
    /// activation rows.
    #[test]
    fn kernels_match_the_dequantized_product() {
        let dev = Device::Cpu;
        for (m, k, n) in [
            (1, 64, 7),
            (1, 640, 300),
            (3, 896, 129),
            (2, 4864, 64),
            (4, 64, 17),
            (11, 896, 40),
            (16, 64, 33),
            // K-quants (rows of whole 256-value super-blocks): one row, a ragged tile,
            // whole tiles.
            (1, 256, 9),
            (5, 512, 40),
            (16, 4864, 24),
            (11, 768, 17),
        ] {
            // Large and small magnitudes in one row exercise the per-block scales.
            let w = (Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap()
                * Tensor::rand(0.01f32, 3.0, (n, k), &dev).unwrap())
            .unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let all = formats().into_iter().chain(k_formats());
            for (format, dtype) in all.filter(|(f, _)| k % f.block_values() == 0) {
                let q = QTensor::quantize(&w, dtype).unwrap();
                let bytes = q.data().unwrap();
                let exact: Vec<f32> = x
                    .matmul(&q.dequantize(&dev).unwrap().t().unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
                let mut reference = vec![0f32; m * n];
                matmul(
                    Level::Scalar,
                    format,
                    &bytes,
                    (m, k, n),
                    &xv,
                    &mut reference,
                )
                .unwrap();
                for (r, e) in reference.iter().zip(&exact) {
                    // 8-bit activations: within 2 % of the largest output.
                    assert!(
                        (r - e).abs() <= 2e-2 * scale,
                        "{format:?} {m}x{k}x{n}: scalar {r} vs exact {e} (scale {scale})"
                    );
                }
                for level in Level::available() {
                    let mut got = vec![f32::NAN; m * n];
                    matmul(level, format, &bytes, (m, k, n), &xv, &mut got).unwrap();
                    for (j, (g, r)) in got.iter().zip(&reference).enumerate() {
                        assert!(
                            (g - r).abs() <= 1e-5 * scale.max(1.0),
                            "{format:?} {level:?} {m}x{k}x{n} [{j}]: {g} vs scalar {r}"
                        );
                    }
                }
            }
        }
    }

    /// Batch invariance: a prompt's rows through the tile kernels give bit for bit what
    /// each row gives alone (the single-row kernel sums in the tile kernel's order), so
    /// logits do not depend on how a prompt is split into forward calls.
    #[test]
    fn tiles_give_each_row_exactly_what_it_gives_alone() {
        for (m, k, n) in [(8, 64, 5), (13, 896, 21), (16, 576, 40), (24, 160, 3)] {
            let w = pseudo_normal(n * k, 3);
            let x = pseudo_normal(m * k, 4);
            for (format, dtype) in formats() {
                let dev = Device::Cpu;
                let wt = Tensor::from_vec(w.clone(), (n, k), &dev).unwrap();
                let bytes = QTensor::quantize(&wt, dtype)
                    .unwrap()
                    .data()
                    .unwrap()
                    .to_vec();
                for level in Level::available() {
                    let mut all = vec![0f32; m * n];
                    matmul(level, format, &bytes, (m, k, n), &x, &mut all).unwrap();
                    for i in 0..m {
                        let mut one = vec![0f32; n];
                        matmul(
                            level,
                            format,
                            &bytes,
                            (1, k, n),
                            &x[i * k..(i + 1) * k],
                            &mut one,
                        )
                        .unwrap();
                        assert_eq!(
                            bits(&all[i * n..(i + 1) * n]),
                            bits(&one),
                            "{format:?} {level:?} {m}x{k}x{n} row {i}"
                        );
                    }
                }
            }
        }
    }

    /// Q4_K rows in the single-row order (alone and in tiles of eight): every level gives
    /// the scalar reference's exact bits, and the
    /// reference gives candle's quantized matmul's exact bits where candle takes its
    /// repacked AVX-512 kernel (llama.cpp's order; 16-row multiples on AVX-512 VNNI),
    /// otherwise agrees to rounding.
    #[test]
    fn q4k_rows_sum_in_llama_cpps_repacked_order() {
        let dev = Device::Cpu;
        let repacked =
            cfg!(target_arch = "x86_64") && Level::available()[0] == Level::Avx512Vnni && {
                #[cfg(target_arch = "x86_64")]
                {
                    std::arch::is_x86_feature_detected!("avx512bw")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            };
        // One row; rows in a padded tile; whole tiles (the ordered tile kernel); a tile
        // and a single row left over.
        for (m, k, n) in [
            (1, 256, 16),
            (1, 4864, 64),
            (3, 512, 48),
            (1, 768, 35),
            (2, 256, 7),
            (8, 512, 40),
            (16, 768, 35),
            (9, 256, 16),
            (17, 4864, 24),
        ] {
            let wt = Tensor::from_vec(pseudo_normal(n * k, 11), (n, k), &dev).unwrap();
            let x = Tensor::from_vec(pseudo_normal(m * k, 12), (m, k), &dev).unwrap();
            let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let q = std::sync::Arc::new(QTensor::quantize(&wt, GgmlDType::Q4K).unwrap());
            let bytes = q.data().unwrap().to_vec();
            let mut reference = vec![0f32; m * n];
            matmul(
                Level::Scalar,
                Format::Q4K,
                &bytes,
                (m, k, n),
                &xv,
                &mut reference,
            )
            .unwrap();
            for level in Level::available() {
                let mut got = vec![f32::NAN; m * n];
                matmul(level, Format::Q4K, &bytes, (m, k, n), &xv, &mut got).unwrap();
                assert_eq!(bits(&got), bits(&reference), "{level:?} {m}x{k}x{n}");
            }
            let candle = candle_product(q, &x);
            if repacked && n % 16 == 0 {
                assert_eq!(bits(&reference), bits(&candle), "{m}x{k}x{n}");
            } else {
                let scale = candle.iter().fold(1f32, |a, v| a.max(v.abs()));
                for (r, c) in reference.iter().zip(&candle) {
                    assert!(
                        (r - c).abs() <= 1e-5 * scale,
                        "{m}x{k}x{n}: {r} vs candle {c}"
                    );
                }
            }
        }
    }
}
