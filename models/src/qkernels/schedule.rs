//! How a product is split over candle's barrier pool: activation rows quantized and
//! tiles built in parallel for prompts, and the weight rows in units of [`UNIT_ROWS`],
//! each unit writing its columns of the output. Every output value is computed whole
//! by one thread, so the split never changes a result.

use super::{QK, TILE};
use crate::par::{par_chunks_mut, par_for, SendPtr};

/// Whether a product is worth splitting over the pool (not the tiny test models').
pub(super) fn worth_the_pool(m: usize, k: usize, n: usize) -> bool {
    n * k * m >= 4096 * QK
}

/// Quantizes activation rows `0..m` (row `i` into `blocks[i * per_row..]`), splitting a
/// prompt's rows over the pool.
pub(super) fn quantize_rows<B: Send>(
    m: usize,
    k: usize,
    blocks: &mut [B],
    quantize: impl Fn(&[f32], &mut [B]) + Sync,
    x: &[f32],
) {
    let per_row = blocks.len() / m.max(1);
    par_chunks_mut(blocks, per_row, m >= 8 && m * k >= 1 << 15, |rows, part| {
        for (i, b) in rows.zip(part.chunks_exact_mut(per_row)) {
            quantize(&x[i * k..(i + 1) * k], b);
        }
    });
}

/// Builds `groups` tiles of [`TILE`] rows (tile `g` into `tiles[g * per_group..]`),
/// splitting them over the pool when there are several.
pub(super) fn build_tiles<T: Send>(
    groups: usize,
    tiles: &mut [T],
    parallel: bool,
    build: impl Fn(usize, &mut [T]) + Sync,
) {
    let per_group = tiles.len() / groups.max(1);
    par_chunks_mut(tiles, per_group, parallel && groups >= 2, |gs, part| {
        for (g, t) in gs.zip(part.chunks_exact_mut(per_group)) {
            build(g, t);
        }
    });
}

/// Weight rows per unit of work: few enough for the pool's shared cursor, and each unit
/// reads its rows once for all activation rows.
pub(super) const UNIT_ROWS: usize = 16;

/// The columns of an `m x n` output that one unit of weight rows writes.
pub(super) struct UnitOut<'a> {
    out: SendPtr<'a, f32>,
    m: usize,
    n: usize,
    start: usize,
    /// One past the unit's last column.
    end: usize,
}

impl UnitOut<'_> {
    /// Output row `i`, column `start + r`.
    #[inline]
    pub(super) fn put(&self, i: usize, r: usize, v: f32) {
        assert!(i < self.m && self.start + r < self.end);
        // SAFETY: in bounds (above; `end <= n`, and `for_each_unit` checks that `out`
        // holds m x n values); every (i, column) is written by exactly one unit, whose
        // columns `start..end` no other unit has (the assertion keeps it so).
        unsafe { self.out.write(i * self.n + self.start + r, v) };
    }

    /// Output row `i`, the unit's columns.
    pub(super) fn put_row(&self, i: usize, values: &[f32]) {
        for (r, &v) in values.iter().enumerate() {
            self.put(i, r, v);
        }
    }

    /// Output rows `i0..` (those below `m`) from a tile's results, one array of
    /// [`TILE`] rows per weight row.
    pub(super) fn put_tile(&self, i0: usize, tile: &[[f32; TILE]]) {
        // Row by row: each output row's columns are consecutive in memory.
        for di in 0..TILE.min(self.m - i0) {
            for (r, t) in tile.iter().enumerate() {
                self.put(i0 + di, r, t[di]);
            }
        }
    }
}

/// Tiles of [`TILE`] rows for `m` activation rows at a SIMD level: the whole ones, and
/// one more padded with zero rows when two or more are left over (each row's products
/// are the same bits in a tile or alone, and a tile's rows cost a seventh of a row
/// alone: a batched step of 10 or 15 sequences). One row left over goes alone, and the
/// scalar level has no tiles.
pub(super) fn tile_groups(simd: bool, m: usize) -> usize {
    if simd {
        m / TILE + (m % TILE >= 2) as usize
    } else {
        0
    }
}

/// A unit's `width` output columns for all `m` rows: the `groups` tiles through
/// `tile(g, dst)` ([`TILE`] rows a weight row), then each row after them through
/// `row(i, dst)`.
pub(super) fn tiles_then_rows(
    (m, groups, width): (usize, usize, usize),
    out: &UnitOut<'_>,
    mut tile: impl FnMut(usize, &mut [[f32; TILE]]),
    mut row: impl FnMut(usize, &mut [f32]),
) {
    let mut t = [[0f32; TILE]; UNIT_ROWS];
    let t = &mut t[..width];
    for g in 0..groups {
        tile(g, t);
        out.put_tile(g * TILE, t);
    }
    let mut d = [0f32; UNIT_ROWS];
    let d = &mut d[..width];
    for i in (groups * TILE).min(m)..m {
        row(i, d);
        out.put_row(i, d);
    }
}

/// Runs `unit(rows, out)` for every unit of [`UNIT_ROWS`] weight rows of an `m x n`
/// output, over the pool when `parallel`.
pub(super) fn for_each_unit(
    m: usize,
    n: usize,
    out: &mut [f32],
    parallel: bool,
    unit: impl Fn(std::ops::Range<usize>, &UnitOut<'_>) + Sync,
) {
    assert!(m.checked_mul(n).is_some_and(|mn| out.len() >= mn));
    let out = SendPtr::new(out);
    let units = n.div_ceil(UNIT_ROWS);
    par_for(units, parallel, |range| {
        for u in range {
            let rows = u * UNIT_ROWS..(u * UNIT_ROWS + UNIT_ROWS).min(n);
            let out = UnitOut {
                out,
                m,
                n,
                start: rows.start,
                end: rows.end,
            };
            unit(rows, &out);
        }
    });
}
