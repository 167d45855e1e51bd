//! `--device` end to end on the q8_0 llama conformance fixture: `zoo run --device cpu`
//! prints what `zoo run` prints (the default, `auto`, is the CPU on a CPU build) and
//! logs the device; a device the build lacks is refused before anything loads, with
//! the build command that adds it; a device that is no device is a usage error;
//! `zoo inspect` names the device.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quantized-llama/q8_0/model.gguf")
}

fn zoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .env_remove("ZOO_DEVICE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn run(extra: &[&str]) -> Output {
    let model = fixture();
    let mut args = vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "Once upon",
        "-n",
        "6",
    ];
    args.extend(extra);
    zoo(&args)
}

#[test]
fn run_on_cpu_is_run_by_default() {
    let plain = run(&[]);
    let cpu = run(&["--device", "cpu", "--log", "info"]);
    let stderr = String::from_utf8_lossy(&cpu.stderr);
    assert!(plain.status.success() && cpu.status.success(), "{stderr}");
    assert!(plain.stdout.starts_with(b"Once upon") && plain.stdout.len() > 10);
    assert_eq!(
        String::from_utf8_lossy(&cpu.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );
    assert!(
        stderr.contains("device=cpu"),
        "the load log names the device: {stderr}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_cpu_build_says_how_to_build_it() {
    let out = run(&["--device", "cuda:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing generated: {stderr}");
    assert!(
        stderr.contains("without the `cuda` feature")
            && stderr.contains("cargo build --release -p zoo-cli --features cuda"),
        "{stderr}"
    );
}

#[test]
fn a_device_that_is_no_device_is_a_usage_error() {
    let out = run(&["--device", "tpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {stderr}");
    assert!(
        stderr.contains("`tpu` is not a device") && stderr.contains("cuda:N"),
        "{stderr}"
    );
}

#[test]
fn inspect_names_the_device() {
    let model = fixture();
    let out = zoo(&[
        "inspect",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["backends"][0], "cpu");
    let text = zoo(&["inspect", model.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("device:        cpu (--device auto"),
        "{stdout}"
    );
}
