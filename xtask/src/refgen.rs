//! `cargo xtask fixtures` and `cargo xtask refgen`: drive `xtask/refgen/refgen.py`, which
//! writes the conformance fixtures and records references with HF transformers and
//! llama.cpp. Python is used here only; the tests read the committed JSON.
//!
//! The Python environment is `$ZOO_REFGEN_PYTHON` if set, else a virtual environment in
//! the zoo cache (`refgen-venv`) made on first use from `xtask/refgen/requirements.txt`
//! plus llama-cpp-python built from its source distribution (about ten minutes).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run, zoo_release};

pub const LLAMA_CPP_PYTHON: &str = "0.3.36";

/// The zoo cache directory, resolved as `zoo_fetch::cache_dir` does.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZOO_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("zoo");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".cache").join("zoo")
}

pub(crate) fn system_python() -> String {
    std::env::var("ZOO_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The unpacked `llama-cpp-python` source distribution (its `vendor/llama.cpp` holds
/// `convert_hf_to_gguf.py` and `gguf-py`). Nothing from it is executed here except
/// through pip building it, the converter script and cmake building llama.cpp's tools
/// (`llama_cpp::binaries`), all pinned by version.
pub(crate) fn llama_cpp_python_src() -> Result<PathBuf> {
    let base = cache_dir().join(format!("llama-cpp-python-{LLAMA_CPP_PYTHON}"));
    let src = base.join("src");
    let unpacked = src.join(format!("llama_cpp_python-{LLAMA_CPP_PYTHON}"));
    if unpacked
        .join("vendor/llama.cpp/convert_hf_to_gguf.py")
        .is_file()
    {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(&base)?;
    let sdist = base.join(format!("llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"));
    if !sdist.is_file() {
        let mut c = Command::new(system_python());
        c.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-binary",
            "llama-cpp-python",
            "-d",
        ])
        .arg(&base)
        .arg(format!("llama-cpp-python=={LLAMA_CPP_PYTHON}"));
        run(c)?;
    }
    let mut c = Command::new(system_python());
    c.args([
        "-c",
        "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')",
    ])
    .arg(&sdist)
    .arg(&src);
    run(c)?;
    Ok(unpacked)
}

/// The Python that runs refgen.py, with torch, transformers and llama-cpp-python.
fn refgen_python(lcp_src: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ZOO_REFGEN_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = cache_dir().join("refgen-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(format!(".zoo-ready-{LLAMA_CPP_PYTHON}"));
    if ready.is_file() {
        return Ok(python);
    }
    eprintln!(
        "xtask: making the refgen environment in {} (torch is ~3 GB; llama-cpp-python compiles for ~10 min)",
        venv.display()
    );
    let mut c = Command::new(system_python());
    c.args(["-m", "venv"]).arg(&venv);
    run(c)?;
    let mut c = Command::new(&python);
    c.args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
        .arg(root().join("xtask/refgen/requirements.txt"));
    run(c)?;
    let mut c = Command::new(&python);
    c.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-deps",
    ])
    .arg(lcp_src);
    run(c)?;
    std::fs::write(&ready, "")?;
    Ok(python)
}

/// The registry as `zoo list --json` prints it, written to a file for refgen.py.
fn registry_json() -> Result<PathBuf> {
    let out = cargo()
        .args([
            "run", "--quiet", "-p", "zoo-cli", "--bin", "zoo", "--", "list", "--json",
        ])
        .output()
        .context("running `zoo list --json`")?;
    if !out.status.success() {
        bail!(
            "`zoo list --json` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = root().join("target/xtask-registry.json");
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, &out.stdout)?;
    Ok(path)
}

/// The real models `refgen --real-models` records (names known to `zoo fetch`), each
/// with its f16-KV reference (../shared/reference) whose prompts it records again, and
/// where the f32-KV references go.
const REAL_MODELS: [(&str, &str); 3] = [
    ("smollm2", "smollm2-135m-instruct-q4_1"),
    ("gemma3", "gemma3-270m-q4_k_m"),
    ("qwen2.5-coder", "qwen2.5-coder-0.5b-instruct-q4_k_m"),
];
const REAL_MODEL_DIR: &str = "tests/data/reference/f32-kv";

/// `task` is `fixtures` or `refgen`; `names` restricts it to some architectures.
/// `refgen --real-models` instead records llama.cpp (f32 KV cache) on the real models.
pub fn refgen(task: &str, names: &[String]) -> Result<()> {
    let lcp = llama_cpp_python_src()?;
    let python = refgen_python(&lcp)?;
    if task == "refgen" && names.iter().any(|n| n == "--real-models") {
        let mut c = Command::new(python);
        c.arg(root().join("xtask/refgen/refgen.py"))
            .arg("real-models")
            .arg(root().join(REAL_MODEL_DIR));
        for (name, f16_kv) in REAL_MODELS {
            let out = zoo_release("fetch")
                .arg(name)
                .output()
                .with_context(|| format!("zoo fetch {name}"))?;
            anyhow::ensure!(
                out.status.success(),
                "zoo fetch {name} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = String::from_utf8(out.stdout)?;
            let path = path
                .lines()
                .last()
                .context("zoo fetch printed no path")?
                .trim()
                .to_string();
            let f16_kv = root().join(format!("tests/data/reference/f16-kv/{f16_kv}.json"));
            c.arg(format!("{name}={path}={}", f16_kv.display()));
        }
        return run(c);
    }
    let registry = registry_json()?;
    let mut c = Command::new(python);
    c.arg(root().join("xtask/refgen/refgen.py"))
        .arg(task)
        .arg(registry)
        .arg(root().join("tests/fixtures"))
        .args(names)
        .env("ZOO_LLAMA_CPP_DIR", lcp.join("vendor/llama.cpp"));
    run(c)
}
