//! `--model org/name[@revision]` finds a model in the local Hugging Face cache layout
//! (refs, snapshots, blobs) without the network: a safetensors fixture laid out as
//! huggingface_hub lays it out runs under its repository name.

use std::path::Path;
use std::process::Command;

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// `root/models--org--tiny-llama` holding the llama f32 fixture at COMMIT, ref `main`.
fn hub_cache(root: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama/f32");
    let repo = root.join("models--org--tiny-llama");
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let blob = repo.join("blobs").join(format!("sha-{name}"));
        std::fs::copy(fixture.join(name), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snapshot.join(name)).unwrap();
    }
}

fn zoo(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .env("HF_HUB_CACHE", root)
        .output()
        .unwrap()
}

#[test]
fn org_name_resolves_from_the_hub_cache() {
    let root = tempfile::tempdir().unwrap();
    hub_cache(root.path());
    for spec in [
        "org/tiny-llama",
        &format!("org/tiny-llama@{COMMIT}"),
        "org/tiny-llama@main",
    ] {
        let out = zoo(root.path(), &["inspect", spec]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("llama"), "{spec}: {stdout}");
        assert!(
            stdout.contains(COMMIT),
            "{spec}: the snapshot path is shown: {stdout}"
        );
    }
    let out = zoo(
        root.path(),
        &[
            "run",
            "--model",
            "org/tiny-llama",
            "--prompt",
            "a",
            "-n",
            "2",
            "--temperature",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn absent_model_or_revision_says_what_to_do() {
    let root = tempfile::tempdir().unwrap();
    hub_cache(root.path());
    let out = zoo(root.path(), &["inspect", "org/absent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("models--org--absent") && err.contains("download"),
        "{err}"
    );
    let out = zoo(root.path(), &["inspect", "org/tiny-llama@v2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no revision `v2`") && err.contains("main"),
        "{err}"
    );
}
