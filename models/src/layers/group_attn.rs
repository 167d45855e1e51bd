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

use super::attn_math::{exp, tile16_scores, tile16_scores2, weigh};

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
    // `$body` for the heads `$r..$r + $k` in turn, `$k` a constant: `$max` while more
    // heads are left, else one of the listed counts (the register forms take the
    // number of heads as a constant, one accumulator each).
    macro_rules! by_heads {
        ($max:literal; $($k:literal)*; |$r:ident, $K:ident| $body:block) => {{
            let mut $r = 0;
            while $r < heads {
                match heads - $r {
                    $($k => {
                        const $K: usize = $k;
                        $body
                        $r += $k;
                    })*
                    _ => {
                        const $K: usize = $max;
                        $body
                        $r += $max;
                    }
                }
            }
        }};
    }
    let mut j = 0;
    let mut keys = keys.peekable();
    while let Some(tile) = keys.next() {
        let lanes = tile.lanes();
        if tile.width == TILE {
            if let Some(next) = keys.next_if(|t| t.width == TILE) {
                // Two tiles at a time, up to four heads (16 accumulators).
                let lanes2 = next.lanes();
                let mut put = |r: usize, s: &[[f32; TILE]; 2]| {
                    scores[r * n + j..][..lanes.len()].copy_from_slice(&s[0][lanes.clone()]);
                    scores[r * n + j + lanes.len()..][..lanes2.len()]
                        .copy_from_slice(&s[1][lanes2.clone()]);
                };
                let pair = (tile.data, next.data);
                by_heads!(4; 1 2 3; |r, K| {
                    let [s0, s1] = tile16_scores2::<K>(&q[r * stride..], stride, d, pair);
                    for i in 0..K {
                        put(r + i, &[s0[i], s1[i]]);
                    }
                });
                j += lanes.len() + lanes2.len();
                continue;
            }
        }
        let mut put = |r: usize, s: &[f32]| {
            scores[r * n + j..][..lanes.len()].copy_from_slice(&s[lanes.clone()]);
        };
        if tile.width == TILE {
            // Eight heads at a time: eight independent chains of multiply-adds.
            by_heads!(8; 1 2 3 4 5 6 7; |r, K| {
                let rows = tile16_scores::<K>(&q[r * stride..], stride, d, tile.data);
                for (i, s) in rows.iter().enumerate() {
                    put(r + i, s);
                }
            });
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

#[cfg(test)]
mod tests {
    use super::*;

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
