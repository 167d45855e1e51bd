//! The arithmetic of one attention unit on the host, shared by the single-sequence
//! cache ([`super::KvCache`]) and the block store ([`super::PagedKv`]): the query heads
//! of one KV group at one position, over that group's keys and values in position
//! order.
//!
//! The heads of a group read the same keys and values, so each key and value row is
//! loaded once for all of them, and the two caches cannot drift apart. What each head
//! computes, and in which order it sums, is the same as one head alone: its scores
//! ([`dot`], scaled, soft-capped), their maximum, `exp(s - max)` summed in position
//! order, and the weighted values added in position order. A result therefore does not
//! depend on how many heads share the unit, on the block layout or on the other
//! sequences of a step.

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

/// One unit: `heads` query rows, row `r` at `q[r * stride..][..d]`, attending over the
/// `n` positions whose keys and values come as runs of whole `d`-value rows, in
/// position order. Adds head `r`'s result into `out[r * d..][..d]` (zeroed by the
/// caller). `scratch` is reused between calls.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_group<'k>(
    q: &[f32],
    (heads, stride, d): (usize, usize, usize),
    keys: impl Iterator<Item = &'k [f32]>,
    values: impl Iterator<Item = &'k [f32]>,
    n: usize,
    (scale, cap): (f32, Option<f32>),
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    scratch.clear();
    scratch.resize(heads * n + heads, 0.0);
    let (scores, sums) = scratch.split_at_mut(heads * n);
    let query = |r: usize| &q[r * stride..][..d];
    let mut j = 0;
    for key in keys.flat_map(|run| run.chunks_exact(d)) {
        for r in 0..heads {
            let mut x = dot(query(r), key) * scale;
            if let Some(c) = cap {
                x = (x / c).tanh() * c;
            }
            scores[r * n + j] = x;
        }
        j += 1;
    }
    debug_assert_eq!(j, n, "the key runs cover the unit's positions");
    for (row, sum) in scores.chunks_exact_mut(n).zip(sums.iter_mut()) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut s = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            s += *x;
        }
        *sum = s;
    }
    for (j, value) in values.flat_map(|run| run.chunks_exact(d)).enumerate() {
        for r in 0..heads {
            let w = scores[r * n + j] / sums[r];
            for (o, v) in out[r * d..(r + 1) * d].iter_mut().zip(value) {
                *o += w * v;
            }
        }
    }
}
