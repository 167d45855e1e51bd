//! The conformance suite: every registered architecture, checked automatically
//! against its committed fixtures and the references recorded from an independent
//! implementation (HF transformers for safetensors, llama.cpp for GGUF).
//!
//! No architecture is listed here: the suite walks the registry. An architecture
//! without fixtures or references fails with a message that says what to add.
//!
//! For each fixture variant (`tests/fixtures/<arch>/<variant>/`), `check` runs:
//! 1. load through the registry by auto-detection (no architecture given);
//! 2. logits `[batch, vocab]`, f32, finite;
//! 3. KV cache: prompt then one token at a time equals a full forward;
//! 4. reset: the same prompt after a reset gives the same logits and tokens, and a
//!    second prompt after the first equals it on a fresh model (no pollution);
//! 5. eos ids and vocab size agree with config.json / GGUF metadata;
//! 6. parity with the reference: last-position logits within the variant's tolerance
//!    and the 16-token greedy continuation identical (up to a near tie within that
//!    tolerance, reported);
//! 7. a named insta snapshot of the greedy ids and a rounded logits summary;
//! 8. batching: `batching` in the attribute agrees with `CausalLM::batched`, and a
//!    batching model's mixed batch (chunked prompts, sequences at different positions,
//!    a prefix taken from another sequence's blocks) is bit-identical to each sequence
//!    alone ([`zoo_tests::batch`]), its logits within the tolerance of the reference.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;
use zoo::{ArchEntry, CausalLM, Format, ModelSource, Tensor};

#[derive(Deserialize)]
struct Reference {
    implementation: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: Vec<u32>,
    last_logits: Vec<f32>,
    greedy: Vec<u32>,
}

/// How close our logits must be to the reference's, by weight type. References are
/// recorded with full-precision activations and K/V cache on both sides (refgen asks
/// llama.cpp for an f32 cache and no flash attention), so what is left is the order of
/// float sums. Measured maxima are in docs/conformance.md.
///
/// - f32: both sides compute in f32; only summation order differs (measured ~5e-6).
/// - f16: llama.cpp rounds the activations to f16 before its f16 dot products
///   (relative error ~5e-4 per value); candle multiplies the f16 weights in f32. Over two
///   layers that moves logits of magnitude ~4 by a few 1e-3 (measured 5.3e-3); 2e-2
///   leaves room without hiding a wrong computation (a wrong RoPE base, norm or
///   activation moves them by tenths to whole units).
/// - q8_0, q4_0, q4_k_m and other quantized types: both runtimes quantize the
///   activations to 8 bits per block (q8_0 / q8_K) and use the same integer dot
///   products; only the float accumulation of the block sums differs (measured 0 to
///   3e-6), so 1e-3.
fn tolerance(variant: &str) -> f32 {
    match variant {
        "f32" => 1e-4,
        "f16" | "bf16" => 2e-2,
        _ => 1e-3,
    }
}

/// Tolerance of check 3 (our own incremental vs full forward), by weight type.
fn kv_tolerance(variant: &str) -> f32 {
    match variant {
        "f32" => 1e-4,
        _ => 1e-3,
    }
}

fn fixtures_root() -> PathBuf {
    zoo_tests::tests_dir().join("fixtures")
}

fn variants(arch: &str) -> Vec<PathBuf> {
    let dir = fixtures_root().join(arch);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn checkpoint(entry: &ArchEntry, dir: &Path) -> PathBuf {
    match entry.format {
        Format::Gguf => dir.join("model.gguf"),
        Format::Safetensors => dir.to_path_buf(),
    }
}

/// `reference.json`, then any `reference.<implementation>.json` beside it (the f32 GGUF
/// fixtures also carry transformers' logits for the checkpoint they were converted from).
fn references(entry: &ArchEntry, dir: &Path) -> Result<Vec<Reference>> {
    let main = dir.join("reference.json");
    let mut paths = vec![main.clone()];
    let mut extra: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("reference.") && n.ends_with(".json") && *p != main
        })
        .collect();
    extra.sort();
    paths.extend(extra);
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|_| {
                anyhow!(
                    "{} is missing: run `cargo xtask refgen {}` and commit",
                    p.display(),
                    entry.name
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))
        })
        .collect()
}

/// A fixture's own tolerance against llama.cpp, from `tolerance` in its spec (which
/// must say why in `tolerance_why`).
fn tolerance_override(dir: &Path) -> Result<Option<f32>> {
    let Ok(text) = std::fs::read_to_string(dir.join("fixture.json")) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let spec = &v["spec"];
    match spec.get("tolerance") {
        None => Ok(None),
        Some(t) => {
            ensure!(
                spec.get("tolerance_why")
                    .and_then(|w| w.as_str())
                    .is_some_and(|w| !w.is_empty()),
                "{}: a `tolerance` needs its reason in `tolerance_why`",
                dir.display()
            );
            Ok(Some(t.as_f64().context("tolerance is a number")? as f32))
        }
    }
}

fn forward(m: &mut dyn CausalLM, ids: &[u32], offset: usize) -> Result<Vec<f32>> {
    let t = Tensor::new(ids, m.device())?.unsqueeze(0)?;
    let l = m.forward(&t, offset)?;
    ensure!(
        l.dims() == [1, m.vocab_size()],
        "logits shape {:?}, expected [1, {}]",
        l.dims(),
        m.vocab_size()
    );
    ensure!(
        l.dtype() == zoo::DType::F32,
        "logits dtype {:?}, expected f32",
        l.dtype()
    );
    let v: Vec<f32> = l.squeeze(0)?.to_vec1()?;
    ensure!(v.iter().all(|x| x.is_finite()), "non-finite logits");
    Ok(v)
}

fn argmax(v: &[f32]) -> u32 {
    zoo_tests::argmax(v)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy continuation with the KV cache, from a reset; returns ids and the logits
/// that chose each.
fn greedy(m: &mut dyn CausalLM, prompt: &[u32], n: usize) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
    m.reset_cache()?;
    let mut logits = forward(m, prompt, 0)?;
    let mut ids = Vec::new();
    let mut all = Vec::new();
    for i in 0..n {
        let next = argmax(&logits);
        ids.push(next);
        all.push(logits);
        logits = forward(m, &[next], prompt.len() + i)?;
    }
    Ok((ids, all))
}

fn round(x: f32, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x as f64 * p).round() / p
}

/// What one variant measured against one reference: written to `measured.json` beside
/// the fixture with `ZOO_RECORD_MEASURED=1`, from which `cargo xtask codegen` writes the
/// table in docs/conformance.md.
#[derive(serde::Serialize)]
struct Measured {
    implementation: String,
    /// Max |logit - reference| over the prompts.
    max_abs_diff: f32,
    tolerance: f32,
    /// Greedy tokens equal to the reference's before the first difference (the least
    /// over the prompts), of `greedy_len`.
    greedy_matched: usize,
    greedy_len: usize,
    /// Where they differ: the reference's token's logit below ours at that step.
    near_tie_gap: Option<f32>,
}

/// The seven checks on one fixture variant. Returns what was measured against each
/// reference.
fn check(entry: &'static ArchEntry, dir: &Path) -> Result<Vec<Measured>> {
    let variant = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("variant name")?
        .to_string();
    let references = references(entry, dir)?;
    let override_tol = tolerance_override(dir)?;
    let path = checkpoint(entry, dir);

    // 1. Detection through the registry, from the fixture alone, on the suite's device
    // (`ZOO_DEVICE`, the CPU by default).
    let device = zoo_tests::test_device()?;
    let options = zoo::LoadOptions {
        device: device.clone(),
        architecture: None,
    };
    let mut loaded = zoo::load(&path, &options)?;
    ensure!(
        loaded.entry.name == entry.name,
        "detected as `{}`, expected `{}`",
        loaded.entry.name,
        entry.name
    );
    let m = &mut loaded.model;
    ensure!(
        m.architecture() == entry.name,
        "architecture() is `{}`",
        m.architecture()
    );

    // 5. eos ids and vocab size agree with the checkpoint's own metadata.
    let source = ModelSource::open(&path)?;
    let (want_vocab, want_eos) = match &source {
        ModelSource::Safetensors(s) => (
            s.config["vocab_size"].as_u64().context("vocab_size")? as usize,
            s.eos_token_ids(),
        ),
        ModelSource::Gguf(g) => (
            g.vocab_size()?,
            vec![g.u64("tokenizer.ggml.eos_token_id")? as u32],
        ),
    };
    ensure!(
        m.vocab_size() == want_vocab,
        "vocab_size() {} but the checkpoint says {want_vocab}",
        m.vocab_size()
    );
    for e in &want_eos {
        ensure!(
            m.eos_token_ids().contains(e),
            "eos id {e} of the checkpoint missing from {:?}",
            m.eos_token_ids()
        );
    }

    let mut worst: Vec<Measured> = Vec::new();
    let mut summary = Vec::new();
    for (i, reference) in references.iter().enumerate() {
        // Against transformers (exact math) the weight type's own tolerance holds; against
        // llama.cpp a fixture's spec may widen it, with its reason written there.
        let tol = match &override_tol {
            Some(t) if reference.implementation.starts_with("llama.cpp") => *t,
            _ => tolerance(&variant),
        };
        worst.push(Measured {
            implementation: reference.implementation.clone(),
            max_abs_diff: 0.0,
            tolerance: tol,
            greedy_matched: usize::MAX,
            greedy_len: 0,
            near_tie_gap: None,
        });
        for case in &reference.cases {
            // 2. Shapes (inside `forward`) and 3. KV cache against a full forward.
            m.reset_cache()?;
            let full = forward(m, &case.prompt, 0)?;
            m.reset_cache()?;
            let split = case.prompt.len() / 2;
            let mut inc = forward(m, &case.prompt[..split], 0)?;
            for (i, &t) in case.prompt.iter().enumerate().skip(split) {
                inc = forward(m, &[t], i)?;
            }
            let d = max_diff(&full, &inc);
            ensure!(
                d <= kv_tolerance(&variant),
                "incremental decode differs from the full forward by {d}"
            );

            // 6. Parity with the reference.
            let d = max_diff(&full, &case.last_logits);
            worst[i].max_abs_diff = worst[i].max_abs_diff.max(d);
            ensure!(
                d <= tol,
                "logits differ from {} by {d} (tolerance {tol}) for prompt {:?}",
                reference.implementation,
                case.prompt
            );
            let (ids, chose) = greedy(m, &case.prompt, case.greedy.len())?;
            let first_difference = ids.iter().zip(&case.greedy).position(|(a, b)| a != b);
            let matched = first_difference.unwrap_or(case.greedy.len());
            worst[i].greedy_len = case.greedy.len();
            if matched < worst[i].greedy_matched {
                worst[i].greedy_matched = matched;
                worst[i].near_tie_gap = first_difference
                    .map(|p| chose[p][ids[p] as usize] - chose[p][case.greedy[p] as usize]);
            }
            if let Some(p) = first_difference {
                // Random tiny models have flat logits; a different argmax is rounding only
                // if the reference's token is within the tolerance of ours at that step.
                let gap = chose[p][ids[p] as usize] - chose[p][case.greedy[p] as usize];
                ensure!(
                    ids.len() == case.greedy.len() && gap <= tol,
                    "greedy continuation {ids:?} differs from {}'s {:?} at step {p}, where our logit for its token is {gap} below ours (tolerance {tol})",
                    reference.implementation,
                    case.greedy
                );
                eprintln!(
                    "conformance {}/{variant}: greedy leaves {} at step {p} on a near tie (gap {gap:.2e})",
                    entry.name, reference.implementation
                );
            }
            if i > 0 {
                continue;
            }

            // 4. Reset really resets.
            let (again, _) = greedy(m, &case.prompt, case.greedy.len())?;
            ensure!(
                again == ids,
                "after reset the greedy continuation changed: {again:?} vs {ids:?}"
            );
            m.reset_cache()?;
            ensure!(
                forward(m, &case.prompt, 0)? == full,
                "after reset the logits changed"
            );

            let mut top: Vec<(u32, f32)> = full
                .iter()
                .copied()
                .enumerate()
                .map(|(i, x)| (i as u32, x))
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mean = full.iter().sum::<f32>() / full.len() as f32;
            summary.push(serde_json::json!({
                "prompt": case.prompt,
                "greedy": ids,
                "top5": top[..5].iter().map(|(i, x)| (i, round(*x, 2))).collect::<Vec<_>>(),
                "mean": round(mean, 2),
            }));
        }
    }

    // 8. Batching: the attribute's `batching` is what the model does, and a batching
    // model's mixed batch is bit-identical to each sequence alone, and its logits are
    // within the reference's tolerance like the single-sequence forward's.
    ensure!(
        m.batched().is_some() == entry.batching,
        "the attribute says batching = {} but the model's batched() is {}",
        entry.batching,
        if m.batched().is_some() {
            "Some"
        } else {
            "None"
        }
    );
    if let Some(b) = m.batched() {
        let cases = &references[0].cases;
        let prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt.as_slice()).collect();
        let tol = worst[0].tolerance;
        // Bit for bit on the CPU; on a GPU within the reference's tolerance (its
        // products pick kernels by the number of rows).
        let within = (!device.is_cpu()).then_some(tol);
        let lasts = zoo_tests::batch::check_within(b, &prompts, 4, within)?;
        for (case, last) in cases.iter().zip(&lasts) {
            let d = max_diff(last, &case.last_logits);
            eprintln!(
                "conformance {}/{variant}: batched forward off {} by {d:.2e}",
                entry.name, references[0].implementation
            );
            ensure!(
                d <= tol,
                "the batched forward's logits differ from {} by {d} (tolerance {tol}) for prompt {:?}",
                references[0].implementation,
                case.prompt
            );
        }
    }

    // 4. No pollution: the last prompt after all the others equals it on a fresh model.
    let last = &references[0].cases.last().context("no cases")?.prompt;
    m.reset_cache()?;
    let polluted = forward(m, last, 0)?;
    let mut fresh = zoo::load(&path, &options)?;
    ensure!(
        forward(&mut fresh.model, last, 0)? == polluted,
        "a prompt after others differs from the same prompt on a fresh model"
    );

    // 7. Snapshot: a record of the CPU's numerics, not taken on another device (the
    // reference checks above hold there).
    if !device.is_cpu() {
        return Ok(worst);
    }
    insta::with_settings!({ snapshot_path => "snapshots/conformance", prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!(format!("{}__{variant}", entry.name), summary);
    });
    Ok(worst)
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let mut uncovered = Vec::new();
    for entry in zoo::registry::entries() {
        let vs = variants(entry.name);
        if vs.is_empty() {
            uncovered.push(entry.name);
            continue;
        }
        for dir in vs {
            let name = format!(
                "{}::{}",
                entry.name,
                dir.file_name().unwrap().to_string_lossy()
            );
            trials.push(Trial::test(name, move || {
                let measured = check(entry, &dir).map_err(|e| Failed::from(format!("{e:#}")))?;
                for m in &measured {
                    eprintln!(
                        "conformance {}/{}: max |logit - reference| = {:.2e} against {}",
                        entry.name,
                        dir.file_name().unwrap().to_string_lossy(),
                        m.max_abs_diff,
                        m.implementation
                    );
                }
                if std::env::var_os("ZOO_RECORD_MEASURED").is_some() {
                    // Serialized as the f32s they are (through `json!` they would widen
                    // to f64 and print 1e-4 as 0.00009999999747378752).
                    #[derive(serde::Serialize)]
                    struct File<'a> {
                        references: &'a [Measured],
                    }
                    let file = File {
                        references: &measured,
                    };
                    std::fs::write(
                        dir.join("measured.json"),
                        serde_json::to_string_pretty(&file).unwrap() + "\n",
                    )
                    .map_err(|e| Failed::from(format!("writing measured.json: {e}")))?;
                }
                Ok(())
            }));
        }
    }
    trials.push(Trial::test("every_registered_architecture_has_fixtures", move || {
        if uncovered.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no conformance fixtures for {}: add tests/fixtures/<name>/spec.json, run `cargo xtask fixtures <name>` and `cargo xtask refgen <name>`, and commit (docs/conformance.md)",
                uncovered.join(", ")
            )
            .into())
        }
    }));
    libtest_mimic::run(&args, trials).exit();
}
