//! `cargo xtask fuzz [TARGET...] [--runs N | --time S] [--asan]`: runs the cargo-fuzz
//! targets of fuzz/ (nightly) one after another, each with its dictionary
//! (fuzz/dict/TARGET.dict), its committed seeds (fuzz/corpus/TARGET/) and regressions
//! (fuzz/regressions/TARGET/), growing its working corpus in fuzz/work/TARGET/ (not
//! committed). Prints each target's executions, time and coverage (libFuzzer's `cov:`
//! and `ft:`) to stderr, and copies every crash, timeout or out-of-memory input into
//! fuzz/regressions/TARGET/, where the stable replay test (tests/tests/fuzz_corpus.rs)
//! runs it from then on. `--list` prints the targets.
//!
//! The build goes to fuzz/target/ (or `ZOO_FUZZ_TARGET_DIR`). Bounds each run states: `-rss_limit_mb=2048` and `-malloc_limit_mb=2048` (one input
//! may not hold more), `-timeout=10` seconds per input. Without `--asan` the targets
//! are built without a sanitizer (zoo is safe Rust; several times more executions per
//! second), with debug assertions and overflow checks, 16 codegen units.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// What one target's run reached.
struct Outcome {
    target: String,
    executions: u64,
    seconds: f64,
    cov: Option<u64>,
    ft: Option<u64>,
    corpus: Option<u64>,
    crashes: Vec<String>,
}

/// The targets: the files of fuzz/fuzz_targets/.
fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    Ok(v)
}

pub fn fuzz(args: &[String]) -> Result<()> {
    let root = crate::root();
    let all = targets(&root)?;
    if args.iter().any(|a| a == "--list") {
        for t in &all {
            println!("{t}");
        }
        return Ok(());
    }
    let mut chosen = Vec::new();
    let mut limit = vec!["-runs=1000000".to_string()];
    let mut asan = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" | "--time" => {
                let v: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{a} takes a number"))?;
                limit = vec![if a == "--runs" {
                    format!("-runs={v}")
                } else {
                    format!("-max_total_time={v}")
                }];
            }
            "--asan" => asan = true,
            t if all.iter().any(|x| x == t) => chosen.push(t.to_string()),
            other => bail!(
                "unknown target or flag `{other}`; targets: {} (usage: cargo xtask fuzz [TARGET...] [--runs N | --time S] [--asan] | --list)",
                all.join(", ")
            ),
        }
    }
    if chosen.is_empty() {
        chosen = all;
    }
    let mut outcomes = Vec::new();
    for t in &chosen {
        outcomes.push(run_target(&root, t, &limit, asan)?);
    }
    eprintln!("\nxtask fuzz: target | executions | seconds | exec/s | cov | ft | corpus | crashes");
    for o in &outcomes {
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        eprintln!(
            "xtask fuzz: {} | {} | {:.0} | {:.0} | {} | {} | {} | {}",
            o.target,
            o.executions,
            o.seconds,
            o.executions as f64 / o.seconds.max(1e-9),
            opt(o.cov),
            opt(o.ft),
            opt(o.corpus),
            if o.crashes.is_empty() {
                "0".to_string()
            } else {
                o.crashes.join(", ")
            }
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: copied into fuzz/regressions/; fix them and rerun",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The number after `key` in a libFuzzer status line (`cov: 123`, `corp: 45/6Kb`).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace()
        .next()?
        .split('/')
        .next()?
        .parse()
        .ok()
}

fn run_target(root: &Path, target: &str, limit: &[String], asan: bool) -> Result<Outcome> {
    let work = root.join("fuzz/work").join(target);
    let artifacts = root.join("fuzz/artifacts").join(target);
    let regressions = root.join("fuzz/regressions").join(target);
    for d in [&work, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let before: Vec<_> = std::fs::read_dir(&artifacts)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    // The nightly cargo, not the one running xtask (whose variables would pin it).
    let target_dir = std::env::var("ZOO_FUZZ_TARGET_DIR")
        .unwrap_or_else(|_| root.join("fuzz/target").display().to_string());
    let mut c = Command::new("cargo");
    c.current_dir(root);
    for v in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(v);
    }
    // The targets' scratch files (zoo_tests::fuzz::scratch_dir) in a directory of this
    // run, removed after it.
    let scratch = work.with_file_name(format!("{target}.scratch"));
    c.env("ZOO_FUZZ_SCRATCH", &scratch);
    c.args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz"])
        .args(["--target-dir", &target_dir])
        .args(["--codegen-units", "16"])
        .args(["-s", if asan { "address" } else { "none" }])
        .arg(target)
        .arg(&work)
        .arg(root.join("fuzz/corpus").join(target));
    if regressions.is_dir() {
        c.arg(&regressions);
    }
    c.arg("--");
    let dict = root.join("fuzz/dict").join(format!("{target}.dict"));
    if dict.is_file() {
        c.arg(format!("-dict={}", dict.display()));
    }
    c.args(limit)
        .args([
            "-rss_limit_mb=2048",
            "-malloc_limit_mb=2048",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stderr(Stdio::piped());
    eprintln!("xtask: {c:?}");
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| format!("running {c:?}"))?;
    let stderr = child.stderr.take().expect("piped");
    let mut last_status = String::new();
    let mut executions = None;
    let mut stderr_out = std::io::stderr();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        writeln!(stderr_out, "{line}")?;
        if line.starts_with('#') && line.contains("cov:") {
            last_status = line.clone();
        }
        if let Some(n) = field(&line, "stat::number_of_executed_units:") {
            executions = Some(n);
        }
    }
    let status = child.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&scratch);
    let mut crashes = Vec::new();
    for e in std::fs::read_dir(&artifacts)?.flatten() {
        if before.contains(&e.file_name()) {
            continue;
        }
        std::fs::create_dir_all(&regressions)?;
        let name = e.file_name().to_string_lossy().into_owned();
        std::fs::copy(e.path(), regressions.join(&name))
            .with_context(|| format!("copying {}", e.path().display()))?;
        crashes.push(name);
    }
    if !status.success() && crashes.is_empty() {
        bail!("cargo fuzz run {target} failed ({status}) without leaving an input; see its output above");
    }
    Ok(Outcome {
        target: target.to_string(),
        executions: executions
            .or_else(|| {
                last_status
                    .trim_start_matches('#')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0),
        seconds,
        cov: field(&last_status, "cov:"),
        ft: field(&last_status, "ft:"),
        corpus: field(&last_status, "corp:"),
        crashes,
    })
}
