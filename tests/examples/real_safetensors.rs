//! zoo against transformers on a real safetensors checkpoint made by `refgen.py
//! real-safetensors` (bf16, sharded; too large to commit, so this is a tool, not a
//! test): the prompt ids as transformers' tokenizer builds them, then zoo teacher-forced
//! on transformers' greedy continuation and judged at every step on its top logits
//! (`tolerance::judge_greedy`, rule `f32-same-math`: both compute in f32 from the same
//! bf16 weights).
//!
//! `cargo run --release -p zoo-tests --example real_safetensors -- DIR tests/data/reference/transformers-bf16/NAME.json`

use anyhow::{bail, Context, Result};
use zoo_tests::tolerance::{judge_greedy, Rule};

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    continuation_ids: Vec<u32>,
    greedy_top: Vec<Vec<(u32, f32)>>,
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, reference] = args.as_slice() else {
        bail!("usage: real_safetensors DIR REFERENCE.json");
    };
    let r: Reference = serde_json::from_str(&std::fs::read_to_string(reference)?)
        .with_context(|| format!("reading {reference}"))?;
    let mut loaded = zoo::load(dir, &Default::default())?;
    eprintln!("{}: {} ({})", dir, loaded.entry.name, loaded.memory);
    let mut failed = 0;
    for case in &r.cases {
        let ids = loaded.tokenizer.encode_prompt(&case.prompt)?;
        if ids != case.prompt_ids {
            eprintln!(
                "{:?}: prompt ids differ\n  transformers {:?}\n  zoo          {ids:?}",
                case.prompt, case.prompt_ids
            );
            failed += 1;
            continue;
        }
        let chose = zoo_tests::teacher_forced(&mut loaded.model, &ids, &case.continuation_ids)?;
        let (g, verdict) = judge_greedy(
            Rule::F32SameMath,
            &chose,
            &case.continuation_ids,
            &case.greedy_top,
        );
        eprintln!(
            "{:?} ({} tokens): {} of {} steps pick transformers' token, max |logit - transformers| over its top 20 = {:.2e} (bound {})",
            &case.prompt[..40.min(case.prompt.len())],
            ids.len(),
            g.matched,
            g.len,
            g.max_step_diff,
            Rule::F32SameMath.logits()
        );
        if let Err(e) = verdict {
            eprintln!("  {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} cases differ", r.cases.len());
    }
    Ok(())
}
