//! Whether a batched step runs whole, each operation split over the pool's threads, or
//! as groups of its sequences side by side, one group per thread, each computing alone
//! ([`crate::par::on_threads`]).
//!
//! Whole, the threads meet at every operation and all but one wait through the small
//! ones (norms, rotations, residual adds, activation quantization): in a 16-sequence
//! decode step of SmolLM2 the pool's worker sat idle for 27 % of the step (perf). In
//! groups nobody waits until the step ends, but each group pays for its own partial tile
//! of rows, so a step is split only when its groups come out even.
//!
//! A sequence's results are the same bits in any group, as in any batch: every product
//! computes each row alone and attention reads only the sequence's own blocks.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Tensor;
use zoo_core::SeqChunk;

/// The work of a step in one unit, for [`plan`]: a tile of activation rows against all
/// the weights, and one token's attention over one position.
#[derive(Debug, Clone, Copy)]
pub struct StepCost {
    /// A product of up to [`crate::qkernels::TILE`] rows with every weight: the
    /// weights' values (a row alone costs 7/8 of it: `dispatch.rs`).
    pub tile: f64,
    /// One token's attention over one position, all layers: `2 * layers * heads *
    /// head_dim` f32 multiply-adds, each measured at about 1.25 weight values of a tile
    /// (SmolLM2, 16 sequences: 8 rows of a tile cost as much as attention over 3,125
    /// positions, 0.8 of the weights' 134 M values in multiply-adds).
    pub per_position: f64,
}

impl StepCost {
    /// The cost of a decoder of `weights` values with `attention` (layers, heads,
    /// head_dim) of attention.
    pub fn new(weights: usize, (layers, heads, head_dim): (usize, usize, usize)) -> Self {
        Self {
            tile: weights as f64,
            per_position: 2.5 * (layers * heads * head_dim) as f64,
        }
    }

    /// The products of `rows` rows: whole tiles, two or more left over in one more
    /// (padded), a single one alone.
    fn rows(&self, rows: usize) -> f64 {
        let tiles = (rows / 8) as f64;
        self.tile
            * match rows % 8 {
                0 => tiles,
                1 => tiles + 0.875,
                _ => tiles + 1.0,
            }
    }

    /// The attention of a chunk's tokens.
    fn attention(&self, c: &SeqChunk<'_>) -> f64 {
        let n = c.tokens.len();
        // Positions offset + 1 ..= offset + n.
        self.per_position * (n * c.offset + n * (n + 1) / 2) as f64
    }

    fn group(&self, chunks: &[SeqChunk<'_>]) -> f64 {
        let rows = chunks.iter().map(|c| c.tokens.len()).sum();
        self.rows(rows) + chunks.iter().map(|c| self.attention(c)).sum::<f64>()
    }
}

/// How much longer than an even share of the whole step the largest group may take:
/// whole, a step spends about a quarter of the second thread's time waiting (above),
/// so groups up to 15 % over an even share still finish first.
const SLACK: f64 = 1.15;

/// Groups every step is cut into wherever its chunks allow, whatever they cost: 0 (the
/// default) lets the cost decide. Set by the conformance suite, so that its batch
/// checks (a few sequences: too few to split on cost) run the split path too.
static FORCED_GROUPS: AtomicUsize = AtomicUsize::new(0);

/// Cuts every batched step into `groups` groups where its chunks allow (0: by cost, as
/// normally). For tests: a split step must give the same bits as a whole one.
#[doc(hidden)]
pub fn force_groups(groups: usize) {
    FORCED_GROUPS.store(groups, Ordering::Relaxed);
}

/// The step's chunks as `threads` consecutive groups, or `None` to run it whole: fewer
/// chunks than threads, groups that do not come out even, or groups that would touch
/// one another's blocks (a block one group writes, read or written by another), which
/// the engine never asks for (a shared prefix is only read) but a caller could.
pub fn plan(
    chunks: &[SeqChunk<'_>],
    threads: usize,
    cost: &StepCost,
    block_size: usize,
) -> Option<Vec<Range<usize>>> {
    let forced = FORCED_GROUPS.load(Ordering::Relaxed);
    let threads = if forced > 0 { forced } else { threads };
    if threads < 2 || chunks.len() < threads || block_size == 0 {
        return None;
    }
    // Cut where the running share of rows and attention crosses each thread's share.
    let share: Vec<f64> = chunks
        .iter()
        .map(|c| cost.tile * c.tokens.len() as f64 / 8.0 + cost.attention(c))
        .collect();
    let total: f64 = share.iter().sum();
    let mut groups = Vec::with_capacity(threads);
    let (mut start, mut acc) = (0, 0.0);
    for (i, s) in share.iter().enumerate() {
        let left = chunks.len() - i; // chunks from i on
        let groups_left = threads - groups.len(); // including the one being filled
        let target = total * (groups.len() + 1) as f64 / threads as f64;
        // Close the group before chunk i when that is nearer the target than after it,
        // or when every later group needs one of the chunks left.
        let close = i > start
            && groups_left > 1
            && ((acc + s - target) > (target - acc) || left < groups_left);
        if close {
            groups.push(start..i);
            start = i;
        }
        acc += s;
    }
    groups.push(start..chunks.len());
    if groups.len() != threads {
        return None;
    }
    let whole = cost.group(chunks) / threads as f64;
    let largest = groups
        .iter()
        .map(|g| cost.group(&chunks[g.clone()]))
        .fold(0.0, f64::max);
    if forced == 0 && largest > SLACK * whole {
        return None;
    }
    disjoint(chunks, &groups, block_size).then_some(groups)
}

/// The groups a decoder's batched forward runs: [`plan`]'s for this machine's threads,
/// or the whole step as one.
pub fn groups(chunks: &[SeqChunk<'_>], cost: &StepCost, block_size: usize) -> Vec<Range<usize>> {
    let groups = plan(chunks, crate::par::threads(), cost, block_size)
        .unwrap_or_else(|| std::iter::once(0..chunks.len()).collect());
    tracing::trace!(
        chunks = chunks.len(),
        rows = chunks.iter().map(|c| c.tokens.len()).sum::<usize>(),
        groups = groups.len(),
        "batched step"
    );
    groups
}

/// The logits of every chunk, in chunk order: `step` of each group's part (what the
/// decoder prepared for it: its layout, its rotary rows), on this thread for a single
/// group, else the groups side by side on threads of their own
/// ([`crate::par::on_threads`]). `step` is where the block stores are written: the
/// caller vouches that the parts' groups are [`groups`]'s.
pub fn run<P: Sync>(
    parts: &[P],
    step: impl Fn(&P) -> zoo_core::Result<Vec<Tensor>> + Sync,
) -> zoo_core::Result<Vec<Tensor>> {
    if let [one] = parts {
        return step(one);
    }
    let step = &step;
    let jobs = parts.iter().map(|p| move || step(p)).collect();
    let mut out = Vec::new();
    for logits in crate::par::on_threads(jobs) {
        out.extend(logits?);
    }
    Ok(out)
}

/// Whether no group writes a block that another group reads or writes: a chunk writes
/// the blocks of its tokens' positions and reads its table up to its last position.
fn disjoint(chunks: &[SeqChunk<'_>], groups: &[Range<usize>], block_size: usize) -> bool {
    let last_block = |c: &SeqChunk<'_>| (c.offset + c.tokens.len()).div_ceil(block_size);
    let mut writer: HashMap<u32, usize> = HashMap::new();
    for (g, range) in groups.iter().enumerate() {
        for c in &chunks[range.clone()] {
            let Some(written) = c.blocks.get(c.offset / block_size..last_block(c)) else {
                return false; // a short table: the whole step reports it
            };
            for &b in written {
                if *writer.entry(b).or_insert(g) != g {
                    return false;
                }
            }
        }
    }
    groups.iter().enumerate().all(|(g, range)| {
        chunks[range.clone()].iter().all(|c| {
            c.blocks[..last_block(c)]
                .iter()
                .all(|b| writer.get(b).is_none_or(|&w| w == g))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::Logits;

    fn chunk<'a>(tokens: &'a [u32], offset: usize, blocks: &'a [u32]) -> SeqChunk<'a> {
        SeqChunk {
            tokens,
            offset,
            blocks,
            logits: Logits::Last,
        }
    }

    const COST: StepCost = StepCost {
        tile: 1e8,
        per_position: 3e4,
    };

    /// Sixteen decoding sequences split eight and eight; eight do not (one padded tile
    /// whole is half of two); a prompt beside decoders does not.
    #[test]
    fn decode_steps_split_evenly_and_small_or_lopsided_ones_run_whole() {
        let tables: Vec<Vec<u32>> = (0..16).map(|i| vec![2 * i, 2 * i + 1]).collect();
        let decode: Vec<SeqChunk> = tables.iter().map(|t| chunk(&[1], 20, t)).collect();
        assert_eq!(plan(&decode, 2, &COST, 16), Some(vec![0..8, 8..16]));
        assert_eq!(plan(&decode[..8], 2, &COST, 16), None);
        assert_eq!(plan(&decode, 1, &COST, 16), None);
        let prompt = [0u32; 200];
        let big = [
            100u32, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112,
        ];
        let mut mixed = decode.clone();
        mixed.push(chunk(&prompt, 0, &big));
        assert_eq!(plan(&mixed, 2, &COST, 16), None);
    }

    /// A block written by one group and read or written by another keeps the step
    /// whole; a prefix block both only read does not.
    #[test]
    fn groups_that_touch_each_others_blocks_run_whole() {
        let shared_prefix: Vec<Vec<u32>> = (0..16).map(|i| vec![99, 2 * i]).collect();
        let ok: Vec<SeqChunk> = shared_prefix.iter().map(|t| chunk(&[1], 20, t)).collect();
        assert!(plan(&ok, 2, &COST, 16).is_some());
        // Sequence 12 writes block 0, which sequence 3's table reads.
        let mut clash = shared_prefix.clone();
        clash[12] = vec![99, 6];
        let bad: Vec<SeqChunk> = clash.iter().map(|t| chunk(&[1], 20, t)).collect();
        assert_eq!(plan(&bad, 2, &COST, 16), None);
        // A table too short for its positions.
        let short = [vec![1u32]];
        let mut bad: Vec<SeqChunk> = ok.clone();
        bad[0] = chunk(&[1], 20, &short[0]);
        assert_eq!(plan(&bad, 2, &COST, 16), None);
    }

    /// A sequence deeper in its context than the others still splits eight and eight;
    /// one whose attention weighs most of a tile keeps the step whole (no cut of
    /// sixteen rows is even).
    #[test]
    fn attention_counts_toward_a_group() {
        let tables: Vec<Vec<u32>> = (0..16)
            .map(|i| (300 * i..300 * i + 300).collect())
            .collect();
        let mut steps: Vec<SeqChunk> = tables.iter().map(|t| chunk(&[1], 20, t)).collect();
        steps[0] = chunk(&[1], 200, &tables[0]);
        assert_eq!(plan(&steps, 2, &COST, 16), Some(vec![0..8, 8..16]));
        steps[0] = chunk(&[1], 3000, &tables[0]);
        assert_eq!(plan(&steps, 2, &COST, 16), None);
    }
}
