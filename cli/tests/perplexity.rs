//! `zoo perplexity` end to end on the q8_0 llama conformance fixture and the committed
//! text: stdout is the one line `Final estimate: PPL = … +/- …` in llama-perplexity's
//! shape, the running estimate goes to stderr, the figure is llama-perplexity's on the
//! same file to within f32 rounding of the logits, and a text under two windows is
//! refused with the flag that helps.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn zoo_perplexity(file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .arg("perplexity")
        .arg("--model")
        .arg(root().join("tests/fixtures/quantized-llama/q8_0/model.gguf"))
        .arg("--file")
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

/// `llama-perplexity -m tests/fixtures/quantized-llama/q8_0/model.gguf
/// -f tests/data/perplexity/python-3.11-datamodel-types.txt -c 64 --chunks 20 -t 2`
/// (llama.cpp as vendored by llama-cpp-python 0.3.36, built by `cargo xtask llama-cpp`)
/// printed `Final estimate: PPL = 1027.5740 +/- 64.81609`.
const LLAMA_PERPLEXITY: f64 = 1027.5740;

#[test]
fn prints_the_final_estimate_of_llama_perplexity_on_the_same_file() {
    let text = root().join("tests/data/perplexity/python-3.11-datamodel-types.txt");
    let out = zoo_perplexity(&text, &["--ctx", "64", "--chunks", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1, "one line on stdout: {stdout:?}");
    let rest = line
        .strip_prefix("Final estimate: PPL = ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let (ppl, unc) = rest.split_once(" +/- ").unwrap();
    let (ppl, unc): (f64, f64) = (ppl.parse().unwrap(), unc.parse().unwrap());
    assert!(
        ((ppl - LLAMA_PERPLEXITY) / LLAMA_PERPLEXITY).abs() < 2e-4,
        "zoo {ppl} vs llama-perplexity {LLAMA_PERPLEXITY}"
    );
    assert!(unc > 0.0 && unc < ppl / 5.0, "{unc}");
    assert!(
        stderr.contains("[1]") && stderr.contains("[20]"),
        "{stderr}"
    );
}

#[test]
fn a_text_under_two_windows_is_refused_with_the_ctx_flag() {
    let d = tempfile::tempdir().unwrap();
    let short = d.path().join("short.txt");
    std::fs::write(&short, "A text of far fewer than two windows of tokens.\n").unwrap();
    let out = zoo_perplexity(&short, &["--ctx", "64"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("needs at least 128") && stderr.contains("`--ctx N`"),
        "{stderr}"
    );
}
