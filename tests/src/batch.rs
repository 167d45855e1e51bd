//! The batch check of the conformance suite and the engine tests: a mixed batched run
//! (prompts cut into chunks at different points, sequences at different positions in
//! one step, one sequence starting from another's prefix blocks) against each sequence
//! run alone, compared bit for bit.

use anyhow::{ensure, Result};
use zoo::{BatchedLM, Logits, SeqChunk};

/// Positions per KV block in the check: small, so that prompts span many blocks.
const BLOCK: usize = 4;

/// A sequence of the check: its block table and the logits rows it has produced.
struct Seq {
    tokens: Vec<u32>,
    table: Vec<u32>,
    rows: Vec<Vec<u32>>,
}

/// Hands out block ids from the top down, so tables are not in memory order.
struct Blocks(u32);

impl Blocks {
    fn cover(&mut self, table: &mut Vec<u32>, positions: usize) -> Result<()> {
        while table.len() * BLOCK < positions {
            ensure!(self.0 > 0, "the check ran out of KV blocks");
            self.0 -= 1;
            table.push(self.0);
        }
        Ok(())
    }
}

/// One sequence's part of a step: its index, its new tokens (`None`: its greedy next
/// token) and the logits it wants.
type Part = (usize, Option<Vec<u32>>, Logits);

/// Runs `steps` and records the bits of every logits row per sequence.
fn run(
    b: &mut dyn BatchedLM,
    seqs: &mut [Seq],
    blocks: &mut Blocks,
    steps: &[Vec<Part>],
) -> Result<()> {
    for step in steps {
        let mut offsets = Vec::new();
        for (s, toks, _) in step {
            let seq = &mut seqs[*s];
            offsets.push(seq.tokens.len());
            let new = match toks {
                Some(t) => t.clone(),
                None => vec![argmax_bits(seq.rows.last().expect("a row before decoding"))],
            };
            seq.tokens.extend(new);
            blocks.cover(&mut seq.table, seq.tokens.len())?;
        }
        let chunks: Vec<SeqChunk> = step
            .iter()
            .zip(&offsets)
            .map(|((s, _, logits), &offset)| SeqChunk {
                tokens: &seqs[*s].tokens[offset..],
                offset,
                blocks: &seqs[*s].table,
                logits: *logits,
            })
            .collect();
        let out = b.forward_batch(&chunks)?;
        ensure!(
            out.len() == step.len(),
            "{} results for {} chunks",
            out.len(),
            step.len()
        );
        for ((s, _, logits), (t, &offset)) in step.iter().zip(out.iter().zip(&offsets)) {
            let n = seqs[*s].tokens.len() - offset;
            ensure!(
                t.dims()[0] == logits.rows(n),
                "{:?} rows for {logits:?} of {n} tokens",
                t.dims()
            );
            for r in t.to_vec2::<f32>()? {
                ensure!(r.iter().all(|x| x.is_finite()), "non-finite logits");
                seqs[*s].rows.push(r.iter().map(|x| x.to_bits()).collect());
            }
        }
    }
    Ok(())
}

fn argmax_bits(row: &[u32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if f32::from_bits(x) > f32::from_bits(row[best]) {
            best = i;
        }
    }
    best as u32
}

/// The mixed batch against each prompt alone; returns each prompt's last-position
/// logits from its run alone (for the caller to hold against a reference).
///
/// Alone: the whole prompt in one chunk (every position's logits), then `decode`
/// greedy steps. Mixed: the first prompt cut in two chunks (the first without logits),
/// the others whole in the first step; then decode steps for all; from the third step a copy of the first
/// prompt that starts from the first sequence's full prefix blocks (as the prefix cache
/// hands them out) and computes only the rest. Every row must be the same bits.
pub fn check(b: &mut dyn BatchedLM, prompts: &[&[u32]], decode: usize) -> Result<Vec<Vec<f32>>> {
    check_within(b, prompts, decode, None)
}

/// [`check`] with the rows compared within `tolerance` (max |difference|) instead of
/// bit for bit: for a model on a GPU, whose products (candle's CUDA quantized matmul,
/// cuBLAS) choose their kernels by the number of rows.
pub fn check_within(
    b: &mut dyn BatchedLM,
    prompts: &[&[u32]],
    decode: usize,
    tolerance: Option<f32>,
) -> Result<Vec<Vec<f32>>> {
    ensure!(
        !prompts.is_empty() && prompts.iter().all(|p| p.len() >= 2),
        "prompts of 2+ tokens"
    );
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0) + decode + 2;
    let total_blocks = (prompts.len() + 1) * longest.div_ceil(BLOCK) * 2 + 8;
    b.allocate_kv(total_blocks, BLOCK)?;
    let new = |n| {
        (0..n)
            .map(|_| Seq {
                tokens: vec![],
                table: vec![],
                rows: vec![],
            })
            .collect::<Vec<_>>()
    };

    // Alone, one sequence at a time.
    let mut alone = new(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let mut blocks = Blocks(total_blocks as u32);
        let mut steps = vec![vec![(i, Some(p.to_vec()), Logits::All)]];
        steps.extend((0..decode).map(|_| vec![(i, None, Logits::Last)]));
        run(b, &mut alone, &mut blocks, &steps)?;
    }

    // Mixed: sequence `prompts.len()` is the copy of prompt 0 from its prefix blocks.
    let mut mixed = new(prompts.len() + 1);
    let mut blocks = Blocks(total_blocks as u32);
    let cut = prompts[0].len() / 2;
    // The first chunk asks for no logits (a prompt chunk that does not end the prompt):
    // its keys and values must still be written. Its rows are taken from the run alone.
    mixed[0].rows = alone[0].rows[..cut].to_vec();
    let mut first: Vec<_> = vec![(0, Some(prompts[0][..cut].to_vec()), Logits::None)];
    first.extend((1..prompts.len()).map(|i| (i, Some(prompts[i].to_vec()), Logits::All)));
    let mut second = vec![(0, Some(prompts[0][cut..].to_vec()), Logits::All)];
    second.extend((1..prompts.len()).map(|i| (i, None, Logits::Last)));
    run(b, &mut mixed, &mut blocks, &[first, second])?;
    let copy = prompts.len();
    let shared = (prompts[0].len() - 1) / BLOCK;
    mixed[copy].table = mixed[0].table[..shared].to_vec();
    mixed[copy].tokens = prompts[0][..shared * BLOCK].to_vec();
    mixed[copy].rows = alone[0].rows[..shared * BLOCK].to_vec();
    for step in 0..decode {
        let mut s: Vec<_> = (0..prompts.len())
            .filter(|&i| mixed[i].rows.len() < alone[i].rows.len())
            .map(|i| (i, None, Logits::Last))
            .collect();
        if step == 0 {
            s.push((
                copy,
                Some(prompts[0][shared * BLOCK..].to_vec()),
                Logits::All,
            ));
        } else {
            s.push((copy, None, Logits::Last));
        }
        run(b, &mut mixed, &mut blocks, &[s])?;
    }
    for (i, seq) in mixed.iter().enumerate() {
        let of = if i == copy { 0 } else { i };
        let want = &alone[of].rows;
        let n = seq.rows.len().min(want.len());
        ensure!(
            n > prompts[of].len(),
            "sequence {i}: only {n} rows compared"
        );
        for (r, (got, want)) in seq.rows[..n].iter().zip(&want[..n]).enumerate() {
            match tolerance {
                None => {
                    let diff = got.iter().zip(want.iter()).filter(|(a, b)| a != b).count();
                    ensure!(
                        diff == 0,
                        "sequence {i} row {r}: {diff} logits differ in a mixed batch from the same sequence alone (bit-identical expected)"
                    );
                }
                Some(tol) => {
                    let d = got
                        .iter()
                        .zip(want.iter())
                        .map(|(a, b)| (f32::from_bits(*a) - f32::from_bits(*b)).abs())
                        .fold(0f32, f32::max);
                    ensure!(
                        d <= tol,
                        "sequence {i} row {r}: a mixed batch differs from the same sequence alone by {d} (tolerance {tol})"
                    );
                }
            }
        }
    }
    Ok(prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            alone[i].rows[p.len() - 1]
                .iter()
                .map(|&x| f32::from_bits(x))
                .collect()
        })
        .collect())
}
