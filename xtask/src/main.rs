//! `cargo xtask`: zoo's dev tasks.
//!
//! - `codegen [--check]`: write `models/src/arch.rs` from the `#[register_model]` files.
//! - `bench --model PATH [-p 128 -n 128 -r 3]`: prompt and decode speed (release build).
//! - `fixtures [NAME...]`: write the conformance fixtures (tests/fixtures) with transformers
//!   and llama.cpp.
//! - `refgen [NAME...]`: record the reference logits next to them (docs/conformance.md).
//! - `new-arch NAME --candle MODULE ...`: scaffold an architecture file and its fixture
//!   spec (docs/adding-an-architecture.md).
//! - `ci`: what `.ci/run` runs: codegen check, the whole test suite (which fetches the
//!   real models it needs).

mod codegen;
mod new_arch;
mod refgen;
mod tidy;

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
        "ci" => ci(),
        _ => {
            eprintln!(
                "usage: cargo xtask <codegen [--check] | bench --model PATH [-p N -n N -r N] | new-arch NAME ... | fixtures [NAME...] | refgen [NAME...] | ci>"
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

/// A benchmark, not a test: builds `zoo` in release mode and runs `zoo bench`.
fn bench(args: &[String]) -> Result<()> {
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
        "bench",
    ])
    .args(args);
    run(c)
}

/// The CI job: generated code fresh, then every test with snapshots in check mode. The
/// real models are fetched by the tests that need them (`zoo_tests::real_model`, once,
/// under a lock); a separate `cargo run` here would build the dependencies a second
/// time with other features.
fn ci() -> Result<()> {
    codegen::generate(true)?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"])
        .env("INSTA_UPDATE", "no")
        .env("CI", "true");
    run(test)
}
