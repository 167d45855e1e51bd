//! `cargo xtask`: zoo's dev tasks.
//!
//! - `codegen [--check]`: write `models/src/arch.rs` from the `#[register_model]` files.
//! - `bench --model PATH [-p 128 -n 128 -r 3] [--llama-cpp]`: prompt and decode speed
//!   (release build), side by side with llama.cpp; `bench --dispatch`: the registry's
//!   cost per decode step against calling the candle model directly;
//!   `bench --serve --model PATH_OR_NAME [--levels 1,4,16,64] [--new-tokens 128]
//!   [--threads N] [--zoo-only | --llama-only] [--baseline REV]`: HTTP load on `zoo serve`
//!   and on llama.cpp's `llama-server`, in turn, side by side (bench_serve.rs); with
//!   `--baseline`, also on `zoo serve` as built at a git revision (baseline.rs).
//! - `fixtures [NAME...]`: write the conformance fixtures (tests/fixtures) with transformers
//!   and llama.cpp.
//! - `refgen [NAME...]`: record the reference logits next to them (docs/conformance.md);
//!   `refgen --real-models`: llama.cpp's (f32 KV cache) continuations and top logits on the real models.
//! - `llama-cpp`: build llama.cpp's own `llama-bench`, `llama-server` and `llama-perplexity`
//!   (the llama.cpp the references come from) once, and print their directory.
//! - `new-arch NAME --candle MODULE ...`: scaffold an architecture file and its fixture
//!   spec (docs/adding-an-architecture.md).
//! - `soak [--model NAME_OR_PATH] [--requests 10000]`: `zoo serve` under hostile clients
//!   and many random requests, its resident set recorded over time (soak.rs).
//! - `fuzz [TARGET...] [--runs N | --time S] [--asan] | --list`: the cargo-fuzz targets
//!   (nightly), crashes copied into fuzz/regressions/ (fuzz.rs, docs/reliability.md).
//! - `ci`: what `.ci/run` runs: codegen check, the whole test suite (which fetches the
//!   real models it needs), then `cuda-check`.
//! - `cuda-check [--full]`: `cargo check -p zoo-cli --features cuda` with the CUDA
//!   compiler from PyPI, no GPU needed (cuda.rs).
//! - `gpu-build [--device cpu] [--models NAME,...]`: the release `zoo` and conformance
//!   binaries with `--features cuda` for the GPU proof, in target/gpu-check;
//!   `gpu-check --dry-run`: its script, xtask/gpu-check.sh, on this CPU (gpu_check.rs).

mod baseline;
mod bench_serve;
mod codegen;
mod cuda;
mod fuzz;
mod gpu_check;
mod llama_bench;
mod llama_cpp;
mod new_arch;
mod refgen;
mod soak;
mod tidy;

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map(|(t, r)| (t.as_str(), r))
        .unwrap_or(("help", &[]));
    match task {
        "codegen" => codegen::generate(rest.iter().any(|a| a == "--check")),
        "bench" => bench(rest),
        "fixtures" | "refgen" => refgen::refgen(task, rest),
        "new-arch" => new_arch::new_arch(rest),
        "llama-cpp" => {
            println!("{}", llama_cpp::binaries()?.display());
            Ok(())
        }
        "soak" => soak::soak(rest),
        "fuzz" => fuzz::fuzz(rest),
        "ci" => ci(),
        "cuda-check" => cuda::cuda_check(rest),
        "gpu-build" => gpu_check::gpu_build(rest),
        "gpu-check" => gpu_check::gpu_check(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <codegen [--check] | bench --model PATH [-p N -n N -r N] [--llama-cpp] | bench --dispatch | bench --serve --model PATH_OR_NAME [--levels 1,4,16,64] [--new-tokens N] [--threads N] [--zoo-only|--llama-only] [--baseline REV] | new-arch NAME ... | fixtures [NAME...] | refgen [NAME...] | refgen --real-models | llama-cpp | soak [--model M] [--requests N] | fuzz [TARGET...] [--runs N | --time S] | --list | ci | cuda-check [--full] | gpu-build [--device cpu] [--models NAME,...] | gpu-check --dry-run>"
            );
            if task == "help" || task == "--help" {
                Ok(())
            } else {
                bail!("unknown task `{task}`")
            }
        }
    }
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// `zoo SUBCOMMAND` from a release build (`cargo run --release`), arguments to follow.
pub fn zoo_release(subcommand: &str) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "zoo-cli",
        "--bin",
        "zoo",
        "--",
    ])
    .arg(subcommand);
    c
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> Result<()> {
    eprintln!("xtask: {c:?}");
    let status = c.status().with_context(|| format!("running {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

/// A benchmark, not a test: builds `zoo` in release mode and runs `zoo bench`; with
/// `--llama-cpp`, also llama.cpp's native `llama-bench` ([`llama_bench`]) on the same
/// file with the same settings, in the same run, and prints the ratios.
///
/// `--dispatch` instead measures what the registry costs per decode step against
/// calling the candle model directly (tests/benches/dispatch.rs); `--serve` loads the
/// HTTP servers, zoo's and llama.cpp's (bench_serve.rs).
fn bench(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--serve") {
        return bench_serve::bench_serve(args);
    }
    if args.iter().any(|a| a == "--dispatch") {
        let mut c = cargo();
        c.args(["bench", "-p", "zoo-tests", "--bench", "dispatch"]);
        return run(c);
    }
    let compare = args.iter().any(|a| a == "--llama-cpp");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--llama-cpp").collect();
    // `zoo bench` from a release build.
    let zoo_bench = || zoo_release("bench");
    let mut c = zoo_bench();
    c.args(&args);
    if !compare {
        return run(c);
    }
    c.arg("--json");
    // A short run first, so that both runtimes load the file from the page cache
    // (otherwise zoo, measured first, pays for reading it from disk).
    let mut warm = zoo_bench();
    warm.args(["-p", "1", "-n", "1", "-r", "1", "--json"]);
    for flag in ["--model", "-m", "--arch"] {
        if let Some(i) = args.iter().position(|a| a.as_str() == flag) {
            warm.args(&args[i..(i + 2).min(args.len())]);
        }
    }
    let out = warm.output().context("running zoo bench (warm-up)")?;
    anyhow::ensure!(
        out.status.success(),
        "zoo bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("xtask: {c:?}");
    let out = c.output().context("running zoo bench")?;
    anyhow::ensure!(
        out.status.success(),
        "zoo bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zoo: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let get = |k: &str, default: &str| -> String {
        args.iter()
            .position(|a| a.as_str() == k)
            .and_then(|i| args.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_else(|| default.to_string())
    };
    let threads = zoo["threads"].as_u64().unwrap_or(2).to_string();
    let lc = llama_bench::run(
        Path::new(zoo["model"].as_str().context("model path")?),
        &get("-p", "128"),
        &get("-n", "128"),
        &get("-r", "3"),
        &threads,
        args.iter()
            .position(|a| a.as_str() == "-d")
            .and_then(|i| args.get(i + 1))
            .map(|s| s.as_str()),
    )?;
    let f = |v: &serde_json::Value, p: &[&str]| {
        p.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
    };
    let mib = |b: f64| b / (1u64 << 20) as f64;
    println!(
        "model: {}  threads: {threads}",
        zoo["model"].as_str().unwrap_or("?")
    );
    println!("| | zoo | llama.cpp | zoo / llama.cpp |");
    println!("| --- | ---: | ---: | ---: |");
    for (label, path) in [("pp tok/s", ["pp", "tok_s"]), ("tg tok/s", ["tg", "tok_s"])] {
        let (z, l) = (f(&zoo, &path), f(&lc, &path));
        println!("| {label} | {z:.1} | {l:.1} | {:.2}x |", z / l);
    }
    let (z, l) = (
        mib(f(&zoo, &["peak_rss_bytes"])),
        mib(f(&lc, &["peak_rss_bytes"])),
    );
    println!("| peak RSS MiB | {z:.0} | {l:.0} | {:.2}x |", z / l);
    // llama-bench does not time the load.
    println!("| load s | {:.2} | - | - |", f(&zoo, &["load_s"]));
    Ok(())
}

/// The CI job: generated code fresh, then every test with snapshots in check mode, then
/// the CUDA compile check ([`cuda::cuda_check`]; `ZOO_SKIP_CUDA_CHECK=1` leaves it out).
/// The real models are fetched by the tests that need them (`zoo_tests::real_model`,
/// once, under a lock); a separate `cargo run` here would build the dependencies a
/// second time with other features.
fn ci() -> Result<()> {
    codegen::generate(true)?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"])
        .env("INSTA_UPDATE", "no")
        .env("CI", "true")
        // A one-off build gains nothing from incremental state (~600 MiB on disk).
        .env("CARGO_INCREMENTAL", "0");
    run(test)?;
    if std::env::var_os("ZOO_SKIP_CUDA_CHECK").is_some_and(|v| v == "1") {
        eprintln!("xtask: cuda-check skipped (ZOO_SKIP_CUDA_CHECK=1)");
        return Ok(());
    }
    cuda::cuda_check(&[])
}
