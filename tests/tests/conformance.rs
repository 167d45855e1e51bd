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
//! 6. parity with the reference, under the variant's rule ([`zoo_tests::tolerance`]):
//!    last-position logits within its bound; fed the reference's 16 greedy tokens, at
//!    least the rule's floor of steps picking its token and every other step a near tie
//!    on the reference's own logits; and, for the continuous rules, our logits at every
//!    step within the bound of the reference's top 20;
//! 7. a named insta snapshot of the greedy ids and a rounded logits summary;
//! 8. batching: `batching` in the attribute agrees with `CausalLM::batched`, and a
//!    batching model's mixed batch (chunked prompts, sequences at different positions,
//!    a prefix taken from another sequence's blocks; its steps split into groups of
//!    sequences on two threads where the decoder can) is bit-identical to each sequence
//!    alone ([`zoo_tests::batch`]), its logits within the tolerance of the reference;
//! 9. context full: a prompt of the whole context is refused with
//!    `Error::PromptTooLong`.
//!
//! Beside the variants, `kernel_level::*` runs the whole check of one fixture per
//! quantized type under each kernel level this CPU has (`ZOO_KERNELS`), in child
//! processes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;
use zoo::{ArchEntry, CausalLM, Format, ModelSource};
use zoo_tests::tolerance::{self, Rule};
use zoo_tests::{last_logits as forward, teacher_forced};

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
    /// The reference's top 20 logits at every greedy step, largest first.
    #[serde(default)]
    greedy_top: Vec<Vec<(u32, f32)>>,
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

/// The rules a fixture's spec names for some references (`"rules": {"llama.cpp":
/// "..."}`, see [`tolerance::fixture_rule`]). A free `tolerance` number is refused.
fn spec_rules(dir: &Path) -> Result<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(dir.join("fixture.json")) else {
        return Ok(serde_json::Value::Null);
    };
    let v: serde_json::Value = serde_json::from_str(&text)?;
    ensure!(
        v["spec"].get("tolerance").is_none(),
        "{}: a spec names a rule of tests/src/tolerance.rs (`\"rules\": {{\"llama.cpp\": \"...\"}}`), not a tolerance",
        dir.display()
    );
    Ok(v["spec"]["rules"].clone())
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
    /// The rule that bounds this comparison, its logit bound and greedy floor.
    rule: Rule,
    tolerance: f32,
    greedy_floor: usize,
    /// Max |logit - reference| at the prompts' last positions.
    max_abs_diff: f32,
    /// Max |logit - reference| over the reference's top 20 at the greedy steps both saw.
    max_step_diff: f32,
    /// Greedy steps (teacher-forced on the reference's tokens) whose argmax is the
    /// reference's token (the least over the prompts), of `greedy_len`.
    greedy_matched: usize,
    greedy_len: usize,
    /// Our own free-running greedy continuation: tokens equal to the reference's before
    /// the first difference (the least over the prompts).
    greedy_prefix: usize,
    /// Where a step differs: the reference's own logit for its token above its logit
    /// for ours (the largest over the steps and prompts).
    near_tie_gap: Option<f32>,
}

/// A variant whose GGUF type zoo does not compute (`"zoo_unsupported": true` in its
/// spec: llama.cpp's iq4_nl and iq4_xs): its type, upper-cased as ggml names it.
fn unsupported_type(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("fixture.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    (v["spec"]["zoo_unsupported"] == true)
        .then(|| v["spec"]["gguf_type"].as_str().unwrap_or("").to_uppercase())
}

/// A file llama.cpp writes in a type zoo does not compute is refused at open (before
/// any weight is read), by a typed error that names the type; `zoo::load` says the
/// same. llama.cpp's reference is recorded all the same, for the day zoo computes it.
fn check_unsupported(entry: &ArchEntry, dir: &Path, ty: &str) -> Result<()> {
    let path = checkpoint(entry, dir);
    let opened = ModelSource::open(&path);
    let e = match opened {
        Ok(_) => anyhow::bail!("{} opened, but zoo does not compute {ty}", path.display()),
        Err(e) => e,
    };
    ensure!(
        matches!(e, zoo::Error::InvalidGguf { .. }) && e.to_string().contains(ty),
        "opening a {ty} file: expected an InvalidGguf error naming {ty}, got {e:?}"
    );
    let loaded = zoo::load(&path, &Default::default());
    ensure!(
        loaded.as_ref().is_err_and(|l| l.to_string().contains(ty)),
        "zoo::load of a {ty} file: expected an error naming {ty}, got {:?}",
        loaded.err()
    );
    ensure!(
        dir.join("reference.json").is_file(),
        "llama.cpp's reference for {} is missing: `cargo xtask refgen {}`",
        dir.display(),
        entry.name
    );
    eprintln!("{}: {}", entry.name, e);
    Ok(())
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
    let rules = spec_rules(dir)?;
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
    // Parity failures (6) are collected, so that a failing variant still reports all its
    // figures.
    let mut failures: Vec<String> = Vec::new();
    for (i, reference) in references.iter().enumerate() {
        // The weight type's rule, or the one the fixture's spec names for this reference.
        let rule = tolerance::fixture_rule(&variant, &reference.implementation, &rules)
            .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
        let tol = rule.logits();
        worst.push(Measured {
            implementation: reference.implementation.clone(),
            rule,
            tolerance: tol,
            greedy_floor: 0,
            max_abs_diff: 0.0,
            max_step_diff: 0.0,
            greedy_matched: usize::MAX,
            greedy_len: 0,
            greedy_prefix: usize::MAX,
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
                d <= tolerance::kv_bound(worst[0].rule),
                "incremental decode differs from the full forward by {d}"
            );

            // 6. Parity with the reference.
            let d = max_diff(&full, &case.last_logits);
            worst[i].max_abs_diff = worst[i].max_abs_diff.max(d);
            if d > tol {
                failures.push(format!(
                    "logits differ from {} by {d} (bound {tol}, rule {}) for prompt {:?}",
                    reference.implementation,
                    rule.name(),
                    case.prompt
                ));
            }
            let (ids, _) = greedy(m, &case.prompt, case.greedy.len())?;
            // Rule 1 on the reference's greedy steps, teacher-forced on its tokens: a floor
            // of steps picking its token, any other step a near tie of its own logits,
            // and the logits of every step.
            let chose = teacher_forced(m, &case.prompt, &case.greedy)?;
            let (g, verdict) =
                tolerance::judge_greedy(rule, &chose, &case.greedy, &case.greedy_top);
            if let Err(e) = verdict {
                failures.push(format!(
                    "against {}, prompt {:?}: {e}",
                    reference.implementation, case.prompt
                ));
            }
            let w = &mut worst[i];
            w.greedy_len = g.len;
            w.greedy_floor = rule.greedy_floor(g.len);
            w.max_step_diff = w.max_step_diff.max(g.max_step_diff);
            w.greedy_matched = w.greedy_matched.min(g.matched);
            let prefix = ids
                .iter()
                .zip(&case.greedy)
                .take_while(|(a, b)| a == b)
                .count();
            w.greedy_prefix = w.greedy_prefix.min(prefix);
            if let Some(gap) = g.reference_gap {
                w.near_tie_gap = Some(w.near_tie_gap.map_or(gap, |m| m.max(gap)));
                eprintln!(
                    "conformance {}/{variant}: {} of {} steps pick {}'s token, the others near ties (its gap up to {gap:.2e})",
                    entry.name, g.matched, g.len, reference.implementation
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

    if !failures.is_empty() {
        report(entry, dir, &worst);
        anyhow::bail!("{}", failures.join("\n"));
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
        let mut prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt.as_slice()).collect();
        // A third length beside the references' (13 and 4 tokens): half of the last
        // prompt, so that the batch mixes prompts of three different lengths.
        let last = cases.last().context("no cases")?.prompt.as_slice();
        prompts.push(&last[..(last.len() / 2).max(2)]);
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

    // 9. Context full: a prompt that fills the context is refused by the typed error.
    let ctx = fresh.model.context_length();
    let filler = vec![last[0]; ctx];
    match zoo::generate(
        &mut fresh.model,
        &fresh.tokenizer,
        &filler,
        &Default::default(),
        |_| std::ops::ControlFlow::Continue(()),
    ) {
        Err(zoo::Error::PromptTooLong {
            prompt_tokens,
            context_length,
        }) if prompt_tokens == ctx && context_length == ctx => {}
        other => anyhow::bail!(
            "a prompt of the whole context ({ctx} tokens) gave {:?}, expected Error::PromptTooLong",
            other.map(|g| g.ids)
        ),
    }

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

/// Prints what a variant measured and, with `ZOO_RECORD_MEASURED=1`, writes it to its
/// `measured.json` (also when the variant fails, so that the figures are there to read).
fn report(entry: &ArchEntry, dir: &Path, measured: &[Measured]) {
    let variant = dir.file_name().unwrap().to_string_lossy();
    for m in measured {
        eprintln!(
            "conformance {}/{variant}: against {} ({}): max |logit - reference| = {:.2e}, at greedy steps {:.2e}; greedy steps {} of {} (floor {}), free-running prefix {}{}",
            entry.name,
            m.implementation,
            m.rule.name(),
            m.max_abs_diff,
            m.max_step_diff,
            m.greedy_matched,
            m.greedy_len,
            m.greedy_floor,
            m.greedy_prefix,
            m.near_tie_gap
                .map(|g| format!(", then the reference's gap {g:.2e}"))
                .unwrap_or_default()
        );
    }
    if std::env::var_os("ZOO_RECORD_MEASURED").is_some() {
        // Serialized as the f32s they are (through `json!` they would widen to f64 and
        // print 1e-4 as 0.00009999999747378752).
        #[derive(serde::Serialize)]
        struct File<'a> {
            references: &'a [Measured],
        }
        let text = serde_json::to_string_pretty(&File {
            references: measured,
        })
        .unwrap()
            + "\n";
        if let Err(e) = std::fs::write(dir.join("measured.json"), text) {
            eprintln!("writing {}: {e}", dir.join("measured.json").display());
        }
    }
}

/// One fixture per quantized GGUF type (the first entry that has it): the variants that
/// run zoo's quantized kernels.
fn one_fixture_per_quantized_type() -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for entry in zoo::registry::entries() {
        if entry.format != Format::Gguf {
            continue;
        }
        for dir in variants(entry.name) {
            let variant = dir.file_name().unwrap().to_string_lossy().to_string();
            // The GGUF type the spec asked llama.cpp for (a variant's name may say more:
            // `f32-llama3-rope`); types zoo refuses have nothing to run.
            let spec: serde_json::Value = std::fs::read_to_string(dir.join("fixture.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let ty = spec["spec"]["gguf_type"]
                .as_str()
                .unwrap_or(&variant)
                .to_string();
            if !matches!(ty.as_str(), "f32" | "f16" | "bf16")
                && spec["spec"]["zoo_unsupported"] != true
            {
                seen.entry(ty)
                    .or_insert_with(|| format!("{}::{variant}", entry.name));
            }
        }
    }
    seen.into_values().collect()
}

/// Each kernel level this CPU has (`ZOO_KERNELS=scalar|avx2|vnni`), end to end: the
/// whole check of one fixture per quantized type, in a child process of this binary per
/// level and fixture (the level is chosen once per process).
fn kernel_level_trials() -> Vec<Trial> {
    use zoo_models::qkernels::Level;
    Level::available()
        .into_iter()
        .map(|level| {
            let name = match level {
                Level::Scalar => "scalar",
                Level::Avx2 => "avx2",
                Level::Avx512Vnni => "vnni",
            };
            Trial::test(format!("kernel_level::{name}"), move || {
                let exe = std::env::current_exe().map_err(|e| format!("{e}"))?;
                let mut failed = Vec::new();
                for trial in one_fixture_per_quantized_type() {
                    let out = std::process::Command::new(&exe)
                        .args(["--exact", &trial, "--test-threads", "1"])
                        .env("ZOO_KERNELS", name)
                        .env_remove("ZOO_RECORD_MEASURED")
                        .output()
                        .map_err(|e| format!("running {}: {e}", exe.display()))?;
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    // The child must have run exactly that one check, and passed it.
                    if !out.status.success() || !stdout.contains("1 passed") {
                        failed.push(format!(
                            "{trial} with ZOO_KERNELS={name}:\n{stdout}\n{}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(failed.join("\n").into())
                }
            })
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    // The batch checks' steps (three or four sequences) are too small to be split into
    // groups on cost: split every one that can be, so that check 8 holds the split path
    // (groups side by side on threads) to the same bits as each sequence alone.
    zoo_models::layers::split::force_groups(2);
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
            if let Some(ty) = unsupported_type(&dir) {
                trials.push(Trial::test(name, move || {
                    check_unsupported(entry, &dir, &ty).map_err(|e| Failed::from(format!("{e:#}")))
                }));
                continue;
            }
            trials.push(Trial::test(name, move || {
                let measured = check(entry, &dir).map_err(|e| Failed::from(format!("{e:#}")))?;
                report(entry, &dir, &measured);
                Ok(())
            }));
        }
    }
    if std::env::var_os("ZOO_KERNELS").is_none() {
        trials.extend(kernel_level_trials());
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
