//! Perplexity of a text, computed the way llama.cpp's `llama-perplexity` computes it
//! by default, so that the two figures can be set side by side and any difference
//! read as a difference of the models' logits, not of the method.
//!
//! The method (`tools/perplexity/perplexity.cpp`, `perplexity()`, without
//! `--ppl-stride`):
//! - the whole text is tokenized once, with the BOS where the model adds one and
//!   special-token text taken as plain text ([`crate::Tokenizer::encode_document`]);
//! - the tokens are cut into `tokens / ctx` windows of `ctx` tokens, back to back
//!   (the tail that does not fill a window is left out), the first `chunks` of them
//!   kept;
//! - each window runs from an empty KV cache, its first token replaced by the BOS when
//!   the model adds one (so every window starts as a text does);
//! - only the second half of each window is scored: the logits at positions
//!   `ctx/2 ..= ctx-2` against the token that follows, `ctx - 1 - ctx/2` tokens per
//!   window, so that every scored token sees at least `ctx/2` tokens of context;
//! - a token's negative log-likelihood is llama.cpp's `log_softmax`: the largest logit
//!   in f32, the sum of f32 `exp(logit - max)` accumulated in f64, and
//!   `nll = -(f32 (logit[tok] - max) - ln(sum))` in f64;
//! - `PPL = exp(mean nll)`, and its uncertainty is the standard error of the mean nll
//!   carried through the exponential: `sqrt((mean(nll²) - mean(nll)²) / (n - 1)) * PPL`,
//!   which llama-perplexity prints as `Final estimate: PPL = … +/- …`.
//!
//! A text shorter than two windows is refused ([`Error::TextTooShort`]), as
//! llama-perplexity refuses it.
//!
//! **Which forward.** A model with a batched forward ([`crate::CausalLM::batched`])
//! runs several windows per step ([`PerplexityOptions::parallel`], as llama-perplexity
//! runs `n_batch / ctx` sequences per decode): the unscored first halves in one step
//! that only fills the KV blocks, the scored second halves in a second step that
//! returns every position's logits ([`Logits::All`]). A batched row's logits are the
//! same bits whatever the batch or the chunking (see [`crate::batch`]), so the result
//! does not depend on `parallel`. A model without one (the safetensors entries built
//! on candle-transformers) falls back to [`crate::CausalLM::forward`], which returns
//! only the last position's logits: per window, the first half and the first scored
//! position in one forward, then one token per forward through the scored half. That
//! is `ctx/2` forwards per window instead of two batched steps per `parallel` windows,
//! so it is slow, but it computes the same quantity.

use std::time::Instant;

use candle_core::Tensor;

use crate::{BatchedLM, CausalLM, Error, Logits, Result, SeqChunk};

/// How the text is cut and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per window (llama-perplexity's `-c`, default 512). At least 4, at most
    /// the model's context length.
    pub ctx: usize,
    /// Score at most this many windows (llama-perplexity's `--chunks`); `None`: all.
    pub chunks: Option<usize>,
    /// Windows run together in one batched step (llama-perplexity runs
    /// `n_batch / ctx`, 4 at its defaults). Ignored by the one-token fallback.
    pub parallel: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        Self {
            ctx: 512,
            chunks: None,
            parallel: Self::llama_parallel(512),
        }
    }
}

impl PerplexityOptions {
    /// The windows llama-perplexity runs per decode at a context of `ctx`: its default
    /// batch of 2048 tokens divided by `ctx`, at least 1.
    pub fn llama_parallel(ctx: usize) -> usize {
        (2048 / ctx.max(1)).max(1)
    }
}

/// The running estimate after a window, for progress reports (llama-perplexity prints
/// `[window]ppl,`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowScore {
    /// Windows scored so far (1-based: the window just scored).
    pub window: usize,
    /// Windows in all.
    pub windows: usize,
    /// `exp(mean nll)` over the tokens scored so far.
    pub ppl: f64,
    /// Seconds since the computation started.
    pub elapsed_s: f64,
}

/// The perplexity of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// `exp(mean nll)`.
    pub ppl: f64,
    /// The standard error of the estimate (`+/-` in llama-perplexity's output); `None`
    /// when it is undefined (one scored token, or a variance that rounds below zero).
    pub uncertainty: Option<f64>,
    /// The mean negative log-likelihood in nats.
    pub mean_nll: f64,
    /// Each scored token's negative log-likelihood, window after window.
    pub token_nll: Vec<f64>,
    /// Windows scored.
    pub windows: usize,
    /// Tokens of the whole text (the BOS included where the model adds one).
    pub text_tokens: usize,
    /// Whether the batched forward ran (false: the one-token fallback).
    pub batched: bool,
}

/// The perplexity of `tokens` (a whole text as [`crate::Tokenizer::encode_document`]
/// gives it) under `model`, as llama-perplexity computes it (see the module's
/// documentation); `bos` ([`crate::Tokenizer::added_bos`]) replaces the first token of
/// every window. `on_window` is called after each window with the running estimate.
pub fn perplexity(
    model: &mut dyn CausalLM,
    tokens: &[u32],
    bos: Option<u32>,
    options: &PerplexityOptions,
    mut on_window: impl FnMut(&WindowScore),
) -> Result<Perplexity> {
    let ctx = options.ctx;
    let context_length = model.context_length();
    if ctx < 4 || ctx > context_length {
        return Err(Error::Perplexity(format!(
            "a window of {ctx} tokens is not possible: it must hold at least 4 tokens and at most the model's context of {context_length}"
        )));
    }
    if options.chunks == Some(0) || options.parallel == 0 {
        return Err(Error::Perplexity(format!(
            "chunks ({:?}) and parallel ({}) must be at least 1",
            options.chunks, options.parallel
        )));
    }
    if tokens.len() < 2 * ctx {
        return Err(Error::TextTooShort {
            tokens: tokens.len(),
            ctx,
        });
    }
    let all = tokens.len() / ctx;
    let windows = options.chunks.map_or(all, |c| c.min(all));
    let _span = tracing::info_span!(
        "perplexity",
        arch = model.architecture(),
        ctx,
        windows,
        text_tokens = tokens.len()
    )
    .entered();
    let window = |w: usize| {
        let mut t = tokens[w * ctx..(w + 1) * ctx].to_vec();
        if let Some(b) = bos {
            t[0] = b;
        }
        t
    };
    let start = Instant::now();
    let mut sums = Sums::default();
    let mut report = |sums: &Sums, w: usize| {
        on_window(&WindowScore {
            window: w + 1,
            windows,
            ppl: (sums.nll / sums.count() as f64).exp(),
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    };
    let batched = match model.batched() {
        Some(b) => {
            let parallel = options.parallel.min(windows);
            b.allocate_kv(parallel, ctx)?;
            for group in (0..windows).step_by(parallel) {
                let texts: Vec<Vec<u32>> =
                    (group..windows.min(group + parallel)).map(window).collect();
                for (i, logits) in score_group(b, &texts)?.into_iter().enumerate() {
                    // One window's rows at a time on the host (Gemma 3: 256 rows of
                    // 262,144 logits are 256 MiB).
                    sums.add_window(&logits.flatten_all()?.to_vec1::<f32>()?, &texts[i])?;
                    report(&sums, group + i);
                }
            }
            // The store holds `parallel` windows of keys and values: give it back.
            b.allocate_kv(0, ctx)?;
            true
        }
        None => {
            let device = model.device().clone();
            let first = ctx / 2;
            for w in 0..windows {
                let t = window(w);
                model.reset_cache()?;
                let ids = Tensor::new(&t[..=first], &device)?.unsqueeze(0)?;
                let mut logits = model.forward(&ids, 0)?;
                for pos in first..ctx - 1 {
                    let row = logits.flatten_all()?.to_vec1::<f32>()?;
                    sums.add(&row, t[pos + 1])?;
                    if pos + 1 < ctx - 1 {
                        let ids = Tensor::new(&t[pos + 1..pos + 2], &device)?.unsqueeze(0)?;
                        logits = model.forward(&ids, pos + 1)?;
                    }
                }
                report(&sums, w);
            }
            model.reset_cache()?;
            false
        }
    };
    let n = sums.count() as f64;
    let mean = sums.nll / n;
    let ppl = mean.exp();
    let var = sums.nll2 / n - mean * mean;
    let uncertainty = (var > 0.0 && sums.count() > 1).then(|| (var / (n - 1.0)).sqrt() * ppl);
    Ok(Perplexity {
        ppl,
        uncertainty,
        mean_nll: mean,
        token_nll: sums.tokens,
        windows,
        text_tokens: tokens.len(),
        batched,
    })
}

/// Runs windows (each `ctx` tokens, BOS already in place) in two batched steps and
/// returns each window's logits for positions `ctx/2..ctx`, `[ctx - ctx/2, vocab]`.
/// Window `i` uses KV block `i`, one block of `ctx` positions.
fn score_group(b: &mut dyn BatchedLM, texts: &[Vec<u32>]) -> Result<Vec<Tensor>> {
    let ctx = texts[0].len();
    let first = ctx / 2;
    let tables: Vec<[u32; 1]> = (0..texts.len() as u32).map(|i| [i]).collect();
    let step = |range: std::ops::Range<usize>, logits: Logits| -> Vec<SeqChunk<'_>> {
        texts
            .iter()
            .zip(&tables)
            .map(|(t, table)| SeqChunk {
                tokens: &t[range.clone()],
                offset: range.start,
                blocks: table,
                logits,
            })
            .collect()
    };
    // The unscored first halves only fill the KV blocks.
    b.forward_batch(&step(0..first, Logits::None))?;
    b.forward_batch(&step(first..ctx, Logits::All))
}

/// The running sums of the estimate, in llama-perplexity's terms.
#[derive(Debug, Default)]
struct Sums {
    nll: f64,
    nll2: f64,
    tokens: Vec<f64>,
}

impl Sums {
    fn count(&self) -> usize {
        self.tokens.len()
    }

    /// Scores one token from its position's logits row.
    fn add(&mut self, row: &[f32], next: u32) -> Result<()> {
        let v = nll(row, next)?;
        self.nll += v;
        self.nll2 += v * v;
        self.tokens.push(v);
        Ok(())
    }

    /// Scores a window from the logits of positions `ctx/2..ctx` (flat rows): row `r`
    /// (position `ctx/2 + r`) against token `ctx/2 + r + 1`; the last row predicts
    /// past the window and is not scored.
    fn add_window(&mut self, logits: &[f32], text: &[u32]) -> Result<()> {
        let first = text.len() / 2;
        let rows = text.len() - first;
        if rows == 0 || !logits.len().is_multiple_of(rows) {
            return Err(Error::Perplexity(format!(
                "the batched forward returned {} logits for {rows} rows",
                logits.len()
            )));
        }
        let vocab = logits.len() / rows;
        for (r, row) in logits.chunks_exact(vocab).take(rows - 1).enumerate() {
            self.add(row, text[first + r + 1])?;
        }
        Ok(())
    }
}

/// `-log p(next)` from a logits row, as llama.cpp's `log_softmax` computes it: the
/// maximum in f32, `exp` of each f32 difference summed in f64, the difference at
/// `next` in f32 and the rest in f64.
pub fn nll(row: &[f32], next: u32) -> Result<f64> {
    let Some(&at) = row.get(next as usize) else {
        return Err(Error::Perplexity(format!(
            "token id {next} is outside the model's {} logits",
            row.len()
        )));
    };
    let max = row.iter().copied().fold(row[0], f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from((x - max).exp())).sum();
    Ok(-(f64::from(at - max) - sum.ln()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_cost_log_vocab() {
        let row = vec![0.25f32; 1000];
        let v = nll(&row, 17).unwrap();
        assert!((v - 1000f64.ln()).abs() < 1e-12, "{v}");
    }

    #[test]
    fn nll_matches_a_log_softmax_and_ignores_a_shift() {
        let row: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let lse = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let want = lse - row[7] as f64;
        let got = nll(&row, 7).unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let shifted: Vec<f32> = row.iter().map(|x| x + 8.0).collect();
        assert!((nll(&shifted, 7).unwrap() - got).abs() < 1e-5);
    }

    #[test]
    fn a_token_outside_the_logits_is_an_error() {
        assert!(matches!(nll(&[0.0; 4], 4), Err(Error::Perplexity(_))));
    }
}
