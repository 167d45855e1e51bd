//! The bodies of the fuzz targets, as plain functions: `fuzz/fuzz_targets/<name>.rs`
//! (cargo-fuzz, nightly) calls them with libFuzzer's inputs, and
//! `tests/tests/fuzz_corpus.rs` (stable, in CI) replays the committed corpora and
//! regressions through every one of them, with a bounded number of mutations.
//!
//! Each `run` must never panic, hang or allocate beyond its stated bound, whatever the
//! bytes: an error is the expected outcome for most inputs and is dropped. Sizes a
//! target builds from its input are bounded so that one input cannot legitimately
//! take seconds.

pub mod chat_template;
pub mod config_json;
pub mod gguf_header;
pub mod gguf_tokenizer;
pub mod mutate;
pub mod safetensors_header;
pub mod server_request;

use std::path::{Path, PathBuf};

/// One fuzz target: its name (the file names under fuzz/) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gguf_header",
        run: gguf_header::run,
    },
    Target {
        name: "safetensors_header",
        run: safetensors_header::run,
    },
    Target {
        name: "config_json",
        run: config_json::run,
    },
    Target {
        name: "gguf_tokenizer",
        run: gguf_tokenizer::run,
    },
    Target {
        name: "chat_template",
        run: chat_template::run,
    },
    Target {
        name: "server_request",
        run: server_request::run,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The fuzz/ directory of the workspace (corpora, dictionaries, regressions).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("zoo-tests is in the workspace")
        .join("fuzz")
}

/// A scratch file for targets whose code under test opens a path: `name` in a
/// directory of this process and thread (fuzzing runs one thread; the replay test
/// runs targets on several), rewritten with `bytes` on every call.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = scratch_dir();
    let path = dir.join(name);
    std::fs::write(&path, bytes)
        .unwrap_or_else(|e| panic!("writing the scratch file {}: {e}", path.display()));
    path
}

/// The scratch directory of this process and thread (created on first use), for
/// targets that need a directory of files: they rewrite the files they use on every
/// call. It lies under `$ZOO_FUZZ_SCRATCH` (set by `cargo xtask fuzz`, which removes it
/// after the run), else the system's temporary directory; the corpus replay removes it
/// after each target ([`remove_scratch_dir`]).
pub fn scratch_dir() -> PathBuf {
    let dir = scratch_path();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("creating the scratch directory {}: {e}", dir.display()));
    dir
}

/// Removes this process and thread's scratch directory, if there is one: a later call
/// of [`scratch_dir`] makes it afresh.
pub fn remove_scratch_dir() {
    let _ = std::fs::remove_dir_all(scratch_path());
}

fn scratch_path() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(|c| c.is_ascii_digit()).collect();
    let parent = std::env::var_os("ZOO_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    parent.join(format!("zoo-fuzz-{}-{thread}", std::process::id()))
}
