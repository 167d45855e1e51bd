//! `cargo xtask llama-cpp`: native llama.cpp tools (`llama-bench`, `llama-server`,
//! `llama-perplexity`) built from the llama.cpp vendored in the pinned llama-cpp-python
//! source distribution, so that zoo is compared with the very llama.cpp the references
//! were recorded with, measured without Python in the way.
//!
//! cmake and ninja come from a virtual environment in the zoo cache (`build-venv`), pinned,
//! as neither is assumed to be installed. The build is Release for the host CPU
//! (`GGML_NATIVE`, llama.cpp's default), in `llama.cpp-build` in the zoo cache; it takes
//! a while (17 minutes on two busy cores) and is done once per llama-cpp-python version.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::refgen::{cache_dir, llama_cpp_python_src, system_python, LLAMA_CPP_PYTHON};

/// `crate::run` with the command's output sent to stderr, as stdout carries only the
/// directory printed at the end.
fn run(mut c: Command) -> Result<()> {
    c.stdout(std::io::stderr());
    crate::run(c)
}

/// The targets built; nothing else (tests, examples, the other tools) is.
const TARGETS: [&str; 3] = ["llama-bench", "llama-server", "llama-perplexity"];

/// The build tools, pinned so that a rebuild is configured the same way.
const BUILD_TOOLS: [&str; 2] = ["cmake==4.4.5", "ninja==1.13.2"];

/// The directory holding the three binaries, built first if missing or if they were
/// built from another llama-cpp-python version (the stamp names it).
pub(crate) fn binaries() -> Result<PathBuf> {
    let build = cache_dir().join("llama.cpp-build");
    let bin = build.join("bin");
    let stamp = build.join(".zoo-llama-cpp-python");
    let stamped = std::fs::read_to_string(&stamp).ok();
    if stamped.as_deref() == Some(LLAMA_CPP_PYTHON) && TARGETS.iter().all(|t| bin.join(t).is_file())
    {
        return Ok(bin);
    }
    if stamped.is_some_and(|v| v != LLAMA_CPP_PYTHON) {
        // cmake refuses a build directory configured for another source tree.
        std::fs::remove_dir_all(&build)?;
    }
    let src = llama_cpp_python_src()?.join("vendor/llama.cpp");
    let tools = build_tools()?;
    eprintln!(
        "xtask: building {} from {} in {} (about 17 minutes on two cores)",
        TARGETS.join(", "),
        src.display(),
        build.display()
    );
    let started = std::time::Instant::now();
    let mut c = Command::new(tools.join("cmake"));
    c.arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(&build)
        .args(["-G", "Ninja"])
        .arg(format!(
            "-DCMAKE_MAKE_PROGRAM={}",
            tools.join("ninja").display()
        ))
        .args([
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=ON",
            // Binaries that run from anywhere: libllama and libggml linked in, not beside.
            "-DBUILD_SHARED_LIBS=OFF",
            // No downloads, at build time or at run time: models are local files, and
            // llama-server's web UI (fetched prebuilt by default) is not needed. This
            // llama.cpp ignores LLAMA_CURL (HTTPS is OpenSSL's now); it is kept for others.
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ]);
    run(c)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut c = Command::new(tools.join("cmake"));
    c.arg("--build")
        .arg(&build)
        .args(["-j", &jobs.to_string(), "--target"])
        .args(TARGETS);
    run(c)?;
    std::fs::write(&stamp, LLAMA_CPP_PYTHON)?;
    eprintln!(
        "xtask: llama.cpp built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// The `bin` directory of the virtual environment with cmake and ninja, made on first use.
fn build_tools() -> Result<PathBuf> {
    let venv = cache_dir().join("build-venv");
    let bin = venv.join("bin");
    let ready = venv.join(format!(".zoo-ready-{}", BUILD_TOOLS.join("-")));
    if ready.is_file() {
        return Ok(bin);
    }
    let mut c = Command::new(system_python());
    c.args(["-m", "venv"]).arg(&venv);
    run(c)?;
    let mut c = Command::new(bin.join("python"));
    c.args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(BUILD_TOOLS);
    run(c)?;
    std::fs::write(&ready, "")?;
    Ok(bin)
}
