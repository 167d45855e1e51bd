//! CI's fuzz smoke, on stable: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through every target of `zoo_tests::fuzz::TARGETS`,
//! then a fixed number of deterministic mutants of those seeds
//! (`zoo_tests::fuzz::mutate`; `ZOO_FUZZ_MUTANTS` per target, 2,000 by default). No
//! input may panic or take longer than [`SLOWEST`]. A failing input is written under
//! the target directory's tmp/ so that it can be added to the regressions.
//!
//! The fuzzing itself (libFuzzer, nightly, millions of inputs) is `cargo xtask fuzz`;
//! docs/reliability.md has its figures.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use zoo_tests::fuzz::{fuzz_dir, mutate, Target, TARGETS};

/// The most one input may take (a debug build on a busy CI machine).
const SLOWEST: Duration = Duration::from_secs(10);

fn main() {
    let args = Arguments::from_args();
    let trials = TARGETS
        .iter()
        .map(|t| Trial::test(t.name, move || smoke(t)))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// The files of `dir`, sorted by name (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs one input; the panic message, or the time past [`SLOWEST`], is the error.
fn one(t: &Target, data: &[u8]) -> Result<Duration, String> {
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| (t.run)(data)));
    let took = start.elapsed();
    match outcome {
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())),
        Ok(()) if took > SLOWEST => Err(format!("took {took:?}, past {SLOWEST:?}")),
        Ok(()) => Ok(took),
    }
}

/// Keeps a failing input where it can be looked at and added to the regressions.
fn keep(t: &Target, what: &str, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(t.name);
    std::fs::create_dir_all(&dir).expect("creating the failures directory");
    let path = dir.join(what);
    std::fs::write(&path, data).expect("writing a failing input");
    path
}

fn smoke(t: &Target) -> Result<(), Failed> {
    let corpus = files(&fuzz_dir().join("corpus").join(t.name));
    if corpus.is_empty() {
        return Err(format!("fuzz/corpus/{} holds no seed", t.name).into());
    }
    let seeds_paths: Vec<PathBuf> = corpus
        .into_iter()
        .chain(files(&fuzz_dir().join("regressions").join(t.name)))
        .collect();
    let mut failures = Vec::new();
    let mut seeds = Vec::new();
    let mut slowest = Duration::ZERO;
    for p in &seeds_paths {
        let data = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        match one(t, &data) {
            Ok(took) => slowest = slowest.max(took),
            Err(e) => failures.push(format!("{}: {e}", p.display())),
        }
        seeds.push(data);
    }
    let dict = std::fs::read_to_string(fuzz_dir().join("dict").join(format!("{}.dict", t.name)))
        .map(|d| mutate::parse_dict(&d))
        .unwrap_or_default();
    let mutants: usize = std::env::var("ZOO_FUZZ_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let name_seed = t
        .name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31) + u64::from(b));
    let mut rng = mutate::Rng::new(name_seed);
    for i in 0..mutants {
        let data = mutate::mutant(&mut rng, &seeds, i % seeds.len(), &dict);
        match one(t, &data) {
            Ok(took) => slowest = slowest.max(took),
            Err(e) => {
                let path = keep(t, &format!("mutant-{i}"), &data);
                failures.push(format!("mutant {i} ({}): {e}", path.display()));
            }
        }
    }
    // The files the targets wrote for this thread go with it.
    zoo_tests::fuzz::remove_scratch_dir();
    eprintln!(
        "{}: {} seeds and {mutants} mutants, slowest input {slowest:?}",
        t.name,
        seeds.len()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} input(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        )
        .into())
    }
}
