//! `zoo bench`: prompt processing and decode speed, set up like llama.cpp's
//! `llama-bench -p 128 -n 128` (random prompt tokens, one batch for the prompt, one
//! token at a time for decode, fresh cache each repetition). With `--parallel N`, the
//! engine instead: N requests at once of `-p` prompt tokens and `-n` generated tokens
//! each, aggregate tokens per second (as `llama-batched-bench` does).

use anyhow::Result;
use clap::Args;
use zoo::{CausalLM, Tensor};

use crate::commands::ModelArg;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompt tokens.
    #[arg(short = 'p', long, default_value_t = 128)]
    pub prompt: usize,
    /// Generated tokens.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub gen: usize,
    /// Repetitions (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// Positions already in the KV cache before each test (untimed), like
    /// `llama-bench -d`.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub depth: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Run N requests at once through the engine (continuous batching).
    #[arg(long)]
    pub parallel: Option<usize>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if let Some(n) = a.parallel {
        return engine_bench(&a, n);
    }
    let path = a.model.resolve()?;
    let t = std::time::Instant::now();
    let mut loaded = a.model.load()?;
    let load_s = t.elapsed().as_secs_f64();
    let model = &mut loaded.model;
    let prompt = random_prompt(a.prompt, model.vocab_size() as u64, 0x2545F4914F6CDD1D);
    let context = random_prompt(a.depth, model.vocab_size() as u64, 0x51ED);
    let device = model.device().clone();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for rep in 0..=a.reps {
        model.reset_cache()?;
        for (i, chunk) in context.chunks(512).enumerate() {
            let input = Tensor::new(chunk, &device)?.unsqueeze(0)?;
            model.forward(&input, i * 512)?;
        }
        // `-p 0` (decode only, as `llama-bench -p 0`): decoding starts from token 1.
        let t = std::time::Instant::now();
        let mut next = match prompt.is_empty() {
            true => 1,
            false => {
                let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?;
                let logits = model.forward(&input, a.depth)?;
                logits.argmax(1)?.to_vec1::<u32>()?[0]
            }
        };
        let pp_s = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for i in 0..a.gen {
            let input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
            let logits = model.forward(&input, a.depth + a.prompt + i)?;
            next = logits.argmax(1)?.to_vec1::<u32>()?[0];
        }
        let tg_s = t.elapsed().as_secs_f64();
        if rep > 0 {
            pp.push(a.prompt as f64 / pp_s);
            tg.push(a.gen as f64 / tg_s);
        }
        eprintln!(
            "zoo bench: {} {}/{}: pp{} {:.1} tok/s, tg{} {:.1} tok/s",
            if rep == 0 { "warm-up" } else { "rep" },
            rep,
            a.reps,
            a.prompt,
            a.prompt as f64 / pp_s,
            a.gen,
            a.gen as f64 / tg_s
        );
    }
    let (pp_m, pp_sd) = mean_sd(&pp);
    let (tg_m, tg_sd) = mean_sd(&tg);
    let rss = zoo::memory::peak_rss_bytes().unwrap_or(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": path.display().to_string(),
                "architecture": loaded.entry.name,
                "device": zoo::device_name(&device),
                "threads": threads,
                "depth": a.depth,
                "load_s": load_s,
                "pp": {"tokens": a.prompt, "tok_s": pp_m, "sd": pp_sd},
                "tg": {"tokens": a.gen, "tok_s": tg_m, "sd": tg_sd},
                "peak_rss_bytes": rss,
            })
        );
    } else {
        println!("| model | arch | threads | test | t/s |");
        println!("| --- | --- | ---: | --- | ---: |");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        println!(
            "| {name} | {} | {threads} | pp{} | {pp_m:.2} ± {pp_sd:.2} |",
            loaded.entry.name, a.prompt
        );
        println!(
            "| {name} | {} | {threads} | tg{} | {tg_m:.2} ± {tg_sd:.2} |",
            loaded.entry.name, a.gen
        );
        println!(
            "load {load_s:.2} s, peak RSS {:.1} MiB, device {}",
            rss as f64 / (1 << 20) as f64,
            zoo::device_name(&device)
        );
    }
    Ok(())
}

/// A fixed pseudo-random prompt (xorshift from `seed`), like llama-bench's random tokens.
fn random_prompt(n: usize, vocab: u64, seed: u64) -> Vec<u32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab) as u32
        })
        .collect()
}

/// `--parallel N`: N requests submitted at once (different random prompts, greedy,
/// `-n` tokens each whatever they generate), after one warm-up request; prints the
/// aggregate generated tokens per second, prompt tokens per second over the time to
/// the last first token, and the mean time to first token. Then the prefix cache: the
/// time to first token of a `-p`+16-token prompt cold, and of one sharing its first
/// `-p` tokens.
fn engine_bench(a: &BenchArgs, n: usize) -> Result<()> {
    let loaded = a.model.load()?;
    let vocab = loaded.model.vocab_size() as u64;
    let config = zoo::EngineConfig {
        max_sequences: n,
        kv_budget: zoo::KvBudget::Tokens((n + 2) * (a.prompt + a.gen + 32)),
        ..Default::default()
    };
    let engine = zoo::Engine::start(loaded.model, loaded.tokenizer.into(), config)?;
    let request = |i: usize| {
        let mut r = zoo::Request::new(random_prompt(a.prompt, vocab, 0x9E37 + i as u64), a.gen);
        r.ignore_eos = true;
        r
    };
    let finish = |events: zoo::Events| -> Result<zoo::Finished> {
        for e in events {
            match e {
                zoo::Event::Done(f) => return Ok(f),
                zoo::Event::Error(e) => return Err(e.into()),
                _ => {}
            }
        }
        anyhow::bail!("the engine stopped")
    };
    finish(engine.submit(request(usize::MAX))?)?;
    let t = std::time::Instant::now();
    let all: Vec<zoo::Events> = (0..n)
        .map(|i| engine.submit(request(i)))
        .collect::<zoo::Result<_>>()?;
    let done: Vec<zoo::Finished> = all.into_iter().map(finish).collect::<Result<_>>()?;
    let wall = t.elapsed().as_secs_f64();
    // The prefix cache: a prompt of `-p` new tokens and 16 more, cold, then the same
    // `-p` tokens with 16 others (its whole blocks come from the cache), one token each.
    let shared = random_prompt(a.prompt, vocab, 0xC0FFEE);
    let mut ttft_prefix = Vec::new();
    for tail in [1u64, 2] {
        let mut prompt = shared.clone();
        prompt.extend(random_prompt(16, vocab, tail));
        let f = finish(engine.submit(zoo::Request::new(prompt, 1))?)?;
        ttft_prefix.push((f.time_to_first_token.as_secs_f64(), f.cached_tokens));
    }
    let generated: usize = done.iter().map(|f| f.completion_tokens).sum();
    let ttft: Vec<f64> = done
        .iter()
        .map(|f| f.time_to_first_token.as_secs_f64())
        .collect();
    let last_first = ttft.iter().copied().fold(0.0, f64::max);
    let figures = serde_json::json!({
        "parallel": n,
        "batching": engine.batching(),
        "prompt_tokens": a.prompt,
        "generated_tokens": generated,
        "wall_s": wall,
        "generated_tok_s": generated as f64 / wall,
        "prompt_tok_s": (n * a.prompt) as f64 / last_first,
        "ttft_mean_s": ttft.iter().sum::<f64>() / n as f64,
        "ttft_max_s": last_first,
        "prefix_cold_ttft_s": ttft_prefix[0].0,
        "prefix_cached_ttft_s": ttft_prefix[1].0,
        "prefix_cached_tokens": ttft_prefix[1].1,
        "prefix_cached_over_cold": ttft_prefix[1].0 / ttft_prefix[0].0,
        "peak_rss_bytes": zoo::memory::peak_rss_bytes().unwrap_or(0),
    });
    if a.json {
        println!("{figures}");
    } else {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    Ok(())
}
