//! `bench --serve --baseline REV`: the `zoo` binary as it was at a git revision, so that
//! one benchmark run sets today's server beside an earlier one on the same machine, the
//! same model and the same load. Issue 13's "4x what `zoo serve` does today" is such a
//! ratio: its figure (90 tok/s) came from another machine, and only a run of both
//! servers here, one after the other, says what the engine gained.
//!
//! The revision's tree is exported with `git archive` (no worktree is registered) into
//! the target directory, built there in release mode with its own `Cargo.lock`, and the
//! binary kept as `baseline/zoo-<commit>`: a second run reuses it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::root;

/// The last revision whose `zoo serve` ran one request at a time, resetting the KV cache
/// for each (the server issue 13 measured), before the engine replaced its worker.
pub const SINGLE_WORKER: &str = "68992e4";

/// The release `zoo` of revision `rev` (any name git resolves), built once.
pub fn zoo_at(rev: &str) -> Result<PathBuf> {
    let commit = resolve(rev)?;
    let dir = target_dir().join("baseline");
    let bin = dir.join(format!("zoo-{}", &commit[..12]));
    if bin.is_file() {
        eprintln!(
            "xtask: baseline {rev} ({}): {}",
            &commit[..12],
            bin.display()
        );
        return Ok(bin);
    }
    let src = dir.join(format!("src-{}", &commit[..12]));
    if !src.join("Cargo.toml").is_file() {
        export(&commit, &src)?;
    }
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&src)
        .args(["build", "--release", "-p", "zoo-cli", "--bin", "zoo"])
        // One target directory for every baseline: their dependencies are mostly the same.
        .env("CARGO_TARGET_DIR", dir.join("target"));
    eprintln!(
        "xtask: building the baseline {rev} ({}): {c:?}",
        &commit[..12]
    );
    let status = c.status().context("running cargo for the baseline")?;
    ensure!(status.success(), "building zoo at {rev} failed: {status}");
    std::fs::copy(dir.join("target/release/zoo"), &bin)
        .with_context(|| format!("copying the baseline binary to {}", bin.display()))?;
    Ok(bin)
}

/// The full commit id `rev` names, or an error that says so.
fn resolve(rev: &str) -> Result<String> {
    let out = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{rev}^{{commit}}"))
        .output()
        .context("running git rev-parse")?;
    let commit = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(
        out.status.success() && commit.len() >= 12,
        "--baseline {rev}: not a commit of this repository (`git log` lists them; the \
         single-worker server is {SINGLE_WORKER})"
    );
    Ok(commit)
}

/// The tree of `commit` written into `src` (a fresh directory).
fn export(commit: &str, src: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(src);
    std::fs::create_dir_all(src)?;
    let mut archive = Command::new("git")
        .current_dir(root())
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(src)
        .stdin(archive.stdout.take().expect("piped"))
        .status()
        .context("running tar")?;
    let git = archive.wait()?;
    ensure!(
        git.success() && tar.success(),
        "exporting {commit} into {}: git {git}, tar {tar}",
        src.display()
    );
    Ok(())
}

/// `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_resolve_to_commits_and_nonsense_is_refused() {
        // HEAD, not SINGLE_WORKER: a shallow clone has the one but not the other.
        let commit = resolve("HEAD").unwrap();
        assert!(
            commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{commit}"
        );
        let e = resolve("no-such-revision").unwrap_err().to_string();
        assert!(
            e.contains("not a commit") && e.contains(SINGLE_WORKER),
            "{e}"
        );
    }
}
