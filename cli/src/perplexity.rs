//! `zoo perplexity`: the perplexity of a text file, computed as llama.cpp's
//! `llama-perplexity -f FILE -c CTX [--chunks N]` computes it by default
//! ([`zoo::perplexity`] holds the method), and printed in its shape: the running
//! estimate per window and the timing on stderr, `Final estimate: PPL = … +/- …` on
//! stdout, so that the two programs' figures can be set side by side.

use anyhow::{Context, Result};
use clap::Args;
use zoo::{CausalLM, PerplexityOptions};

use crate::commands::ModelArg;
use crate::hint::CliResult;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text to score (UTF-8). Like llama-perplexity's `-f`, one trailing newline is
    /// dropped before tokenizing.
    #[arg(long, short)]
    pub file: std::path::PathBuf,
    /// Tokens per window; the second half of each window is scored.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many windows (default: every whole window of the text).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunks: Option<u64>,
    /// Windows run together in one batched forward (default: 2048 / ctx, as
    /// llama-perplexity's default batch runs them). The result does not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub parallel: Option<u64>,
}

pub fn perplexity(a: PerplexityArgs) -> Result<()> {
    let mut text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    // llama-perplexity's `-f` drops one trailing newline; so do we, for the same tokens.
    if text.ends_with('\n') {
        text.pop();
    }
    let mut loaded = a.model.load()?;
    let t = std::time::Instant::now();
    let tokens = loaded.tokenizer.encode_document(&text).cli()?;
    let bos = loaded.tokenizer.added_bos().cli()?;
    eprintln!(
        "zoo perplexity: {} tokens ({} bytes) tokenized in {:.0} ms; BOS {}",
        tokens.len(),
        text.len(),
        t.elapsed().as_secs_f64() * 1000.0,
        match bos {
            Some(id) => format!("{id} replaces the first token of each window"),
            None => "not added".into(),
        }
    );
    let options = PerplexityOptions {
        ctx: a.ctx,
        chunks: a.chunks.map(|c| c as usize),
        parallel: a
            .parallel
            .map_or(PerplexityOptions::llama_parallel(a.ctx), |p| p as usize),
    };
    let batched = loaded.model.batched().is_some();
    if !batched {
        eprintln!(
            "zoo perplexity: {} has no batched forward; scoring one token per forward (slow)",
            loaded.entry.name
        );
    }
    let mut line_open = false;
    let r = zoo::perplexity(&mut loaded.model, &tokens, bos, &options, |w| {
        if w.window == 1 {
            // The first report comes after the first step: `parallel` windows batched,
            // one window in the fallback.
            let per_step = if batched {
                options.parallel.min(w.windows)
            } else {
                1
            };
            let steps = w.windows.div_ceil(per_step);
            eprintln!(
                "zoo perplexity: {} windows of {} tokens, {per_step} per step; {:.2} s per step, ETA {:.1} min",
                w.windows,
                options.ctx,
                w.elapsed_s,
                w.elapsed_s * steps as f64 / 60.0
            );
        }
        eprint!("[{}]{:.4},", w.window, w.ppl);
        line_open = true;
    });
    if line_open {
        eprintln!();
    }
    let r = r.cli()?;
    eprintln!(
        "zoo perplexity: {} windows, {} tokens scored, {} forward, mean nll {:.6}",
        r.windows,
        r.token_nll.len(),
        if r.batched {
            "batched"
        } else {
            "one-token fallback"
        },
        r.mean_nll
    );
    match r.uncertainty {
        Some(u) => println!("Final estimate: PPL = {:.4} +/- {u:.5}", r.ppl),
        None => println!("Final estimate: PPL = {:.4} (uncertainty undefined)", r.ppl),
    }
    Ok(())
}
