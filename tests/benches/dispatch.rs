//! What the registry costs: the same tiny Llama (tests/fixtures/llama/f32, safetensors)
//! decoded through `zoo::load` (the derived `Model` enum the registry loads, with
//! zoo's wrapper around candle's model) and through candle-transformers' `llama`
//! called directly. The model is tiny (2 layers, hidden 64) so that a step takes tens
//! of microseconds and any per-call overhead shows; with a real model a step takes
//! milliseconds and the same overhead is a thousand times smaller in proportion.
//!
//! Run with `cargo xtask bench --dispatch` (or `cargo bench -p zoo-tests --bench
//! dispatch`). A benchmark, not a test: it prints, it asserts only that both paths
//! compute the same logits.

use std::hint::black_box;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as candle_llama;
use zoo::CausalLM;

const STEPS: usize = 48;
const ROUNDS: usize = 31;
const SEQS_PER_ROUND: usize = 20;

fn main() -> anyhow::Result<()> {
    // As the `zoo` binary does: otherwise candle reads /proc/cpuinfo on every f32
    // matrix product, a file read per step that dwarfs and blurs what is measured.
    // SAFETY: no other thread runs yet.
    unsafe { zoo::pin_thread_count() };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/llama/f32");
    let device = Device::Cpu;

    let mut loaded = zoo::load(&dir, &Default::default())?;
    let model = &mut loaded.model;

    let config: candle_llama::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let config = config.into_config(false);
    // SAFETY: the fixture is not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &device)?
    };
    let direct = candle_llama::Llama::load(vb, &config)?;

    let tokens: Vec<Tensor> = (0..STEPS)
        .map(|i| Tensor::new(&[[(i * 37 % 256) as u32]], &device))
        .collect::<candle_core::Result<_>>()?;

    // Same logits both ways, or the comparison means nothing.
    model.reset_cache()?;
    let mut cache = candle_llama::Cache::new(true, DType::F32, &config, &device)?;
    for (pos, t) in tokens.iter().enumerate() {
        let a = model.forward(t, pos)?.flatten_all()?;
        let b = direct.forward(t, pos, &mut cache)?.flatten_all()?;
        let d: f32 = (a - b)?.abs()?.max_all()?.to_scalar()?;
        anyhow::ensure!(
            d == 0.0,
            "registry and direct logits differ by {d} at {pos}"
        );
    }

    let mut via_registry = Vec::new();
    let mut via_candle = Vec::new();
    for round in 0..=ROUNDS {
        // Alternate which goes first so drift on a shared machine hits both.
        let mut r = 0.0;
        let mut c = 0.0;
        for order in [round % 2 == 0, round % 2 == 1] {
            if order {
                let t = Instant::now();
                for _ in 0..SEQS_PER_ROUND {
                    model.reset_cache()?;
                    for (pos, tok) in tokens.iter().enumerate() {
                        black_box(model.forward(tok, pos)?);
                    }
                }
                r = t.elapsed().as_secs_f64();
            } else {
                let t = Instant::now();
                for _ in 0..SEQS_PER_ROUND {
                    let mut cache = candle_llama::Cache::new(true, DType::F32, &config, &device)?;
                    for (pos, tok) in tokens.iter().enumerate() {
                        black_box(direct.forward(tok, pos, &mut cache)?);
                    }
                }
                c = t.elapsed().as_secs_f64();
            }
        }
        if round > 0 {
            via_registry.push(r);
            via_candle.push(c);
        }
    }
    // Each round times both paths back to back: the median of the per-round ratios
    // cancels the drift of a shared machine better than a ratio of medians.
    let mut ratios: Vec<f64> = via_registry
        .iter()
        .zip(&via_candle)
        .map(|(r, c)| r / c)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (lo, hi) = (ratios[ratios.len() / 4], ratios[ratios.len() * 3 / 4]);
    let per_step = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] / (SEQS_PER_ROUND * STEPS) as f64 * 1e6
    };
    let (r, c) = (per_step(&mut via_registry), per_step(&mut via_candle));
    let overhead = (ratios[ratios.len() / 2] - 1.0) * 100.0;
    println!("| path | µs per decode step (median of {ROUNDS} rounds) |");
    println!("|---|---|");
    println!("| candle-transformers llama, called directly | {c:.2} |");
    println!("| zoo::load -> Box<dyn CausalLM> (registry) | {r:.2} |");
    println!(
        "registry dispatch overhead: {overhead:+.2} % on a {c:.0} µs step (median of the per-round ratios; quartiles {:+.2} % .. {:+.2} %)",
        (lo - 1.0) * 100.0,
        (hi - 1.0) * 100.0
    );
    Ok(())
}
