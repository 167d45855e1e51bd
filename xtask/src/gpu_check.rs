//! `cargo xtask gpu-build [--device cpu]` and `cargo xtask gpu-check --dry-run`: the
//! binaries of the GPU proof, made on a machine without a GPU, and the proof's script
//! (xtask/gpu-check.sh) tried on the CPU.
//!
//! `gpu-build` builds in release mode, stripped, with `--features cuda` and the PyPI
//! CUDA toolkit ([`crate::cuda`]): the `zoo` program and the conformance suite's test
//! binary, copied into `target/gpu-check/bin` (with the model files of
//! `--models NAME,...` into `target/gpu-check/models`). On the GPU machine, from the
//! repository root with `target/gpu-check` carried: `bash xtask/gpu-check.sh`.
//!
//! cudarc links the CUDA libraries at build time (candle's `dynamic-linking`): cuBLAS,
//! cuRAND, NVRTC and the runtime come from the same Python packages; the driver's
//! `libcuda.so.1` cannot, so a stub of the names cudarc calls stands in for it at link
//! time (as the toolkit's own `lib/stubs/libcuda.so` does), and the machine's driver
//! answers at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where the built binaries (and any carried models) are put for the device call.
fn stage() -> PathBuf {
    crate::root().join("target").join("gpu-check")
}

/// `cargo xtask gpu-build [--device cpu] [--models smollm2,...]`.
pub fn gpu_build(args: &[String]) -> Result<()> {
    let cpu = flag_value(args, "--device").is_some_and(|d| d == "cpu");
    let mut cargo = if cpu {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(crate::root());
        c
    } else {
        let root = crate::cuda::toolkit(true)?;
        // cudarc's sources, for the stub's names.
        let mut fetch = crate::cuda::cargo_with(&root);
        fetch.arg("fetch");
        crate::run(fetch)?;
        link_stubs(&root)?;
        crate::cuda::cargo_with(&root)
    };
    let features: &[&str] = if cpu { &[] } else { &["--features", "cuda"] };
    let bin = stage().join("bin");
    std::fs::create_dir_all(&bin)?;
    let started = std::time::Instant::now();
    let zoo = build(
        &mut cargo,
        &["build", "--release", "-p", "zoo-cli", "--bin", "zoo"],
        features,
    )?;
    let conformance = build(
        &mut cargo,
        &[
            "test",
            "--release",
            "--no-run",
            "-p",
            "zoo-tests",
            "--test",
            "conformance",
        ],
        features,
    )?;
    for (from, name) in [(zoo, "zoo"), (conformance, "conformance")] {
        let to = bin.join(name);
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        // Small enough to travel: no symbols, and compressed (candle's PTX is text).
        let mut strip = Command::new("strip");
        strip.arg("--strip-all").arg(&to);
        crate::run(strip)?;
        let size = std::fs::metadata(&to)?.len();
        let gz = bin.join(format!("{name}.gz"));
        let _ = std::fs::remove_file(&gz);
        let mut gzip = Command::new("gzip");
        gzip.arg("-9").arg(&to);
        crate::run(gzip)?;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "xtask: {} {:.1} MiB stripped, {:.1} MiB gzipped ({})",
            name,
            mib(size),
            mib(std::fs::metadata(&gz)?.len()),
            gz.display()
        );
    }
    std::fs::write(stage().join("device"), if cpu { "cpu\n" } else { "cuda\n" })?;
    if let Some(names) = flag_value(args, "--models") {
        let models = stage().join("models");
        std::fs::create_dir_all(&models)?;
        for name in names.split(',') {
            let known = zoo_known_file(name)?;
            let to = models.join(known.file_name().context("model file name")?);
            if !to.exists() {
                // A hard link where the cache is on the same disk, else a copy.
                std::fs::hard_link(&known, &to)
                    .or_else(|_| std::fs::copy(&known, &to).map(|_| ()))?;
            }
        }
    }
    eprintln!(
        "xtask: gpu-build done in {:.0} s; on the GPU machine, with target/gpu-check carried: bash xtask/gpu-check.sh",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask gpu-check --dry-run`: xtask/gpu-check.sh on this machine's CPU over a
/// CPU build (`gpu-build --device cpu` first), short benches, the real models from the
/// cache. Without `--dry-run` it only says how to run it on a GPU machine.
pub fn gpu_check(args: &[String]) -> Result<()> {
    if !args.iter().any(|a| a == "--dry-run") {
        bail!("the GPU proof runs on a machine with an NVIDIA GPU: build with `cargo xtask gpu-build` here, then run `bash xtask/gpu-check.sh` there with target/gpu-check carried (docs/gpu.md); `cargo xtask gpu-check --dry-run` tries the script on this CPU");
    }
    let mut build_args = vec!["--device".to_string(), "cpu".to_string()];
    if let Some(m) = flag_value(args, "--models") {
        build_args.extend(["--models".to_string(), m.to_string()]);
    }
    gpu_build(&build_args)?;
    let mut c = Command::new("bash");
    c.current_dir(crate::root())
        .arg("xtask/gpu-check.sh")
        .env("ZOO_GPU_CHECK_DEVICE", "cpu")
        .env("ZOO_GPU_CHECK_QUICK", "1")
        .env(
            "OUT",
            crate::root().join("target").join("gpu-check-dry-run"),
        );
    crate::run(c)
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(|s| s.as_str())
}

/// A known real model's file in the cache (fetched by the tests or `zoo fetch`).
fn zoo_known_file(name: &str) -> Result<PathBuf> {
    let file = match name {
        "smollm2" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3" => "gemma-3-270m-q4_k_m.gguf",
        "qwen2.5-coder" => "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        other => bail!("`{other}` is not a known model: smollm2, gemma3 or qwen2.5-coder"),
    };
    let p = crate::refgen::cache_dir().join("models").join(file);
    anyhow::ensure!(
        p.is_file(),
        "{} is not in the cache: `cargo run --release -p zoo-cli -- fetch {name}` first",
        p.display()
    );
    Ok(p)
}

/// Runs `cargo ARGS FEATURES --message-format=json-render-diagnostics` and returns
/// the executable it built.
fn build(cargo: &mut Command, args: &[&str], features: &[&str]) -> Result<PathBuf> {
    let mut c = Command::new(cargo.get_program());
    c.current_dir(crate::root());
    for (k, v) in cargo.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(args)
        .args(features)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit());
    eprintln!("xtask: {c:?}");
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", out.status);
    }
    let mut exe = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(p) = v["executable"].as_str() {
            exe = Some(PathBuf::from(p));
        }
    }
    exe.context("cargo built no executable")
}

/// `lib/stubs` of the toolkit: the unversioned names the linker looks for (the
/// packages ship only `libcublas.so.13` and the like) and a stub `libcuda.so` that
/// defines every driver function cudarc declares (soname `libcuda.so.1`, the
/// driver's).
fn link_stubs(root: &Path) -> Result<()> {
    let stubs = root.join("lib").join("stubs");
    std::fs::create_dir_all(&stubs)?;
    for lib in ["cudart", "cublas", "cublasLt", "curand", "nvrtc"] {
        let link = stubs.join(format!("lib{lib}.so"));
        if link.exists() {
            continue;
        }
        let real = std::fs::read_dir(root.join("lib"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("lib{lib}.so.")))
            })
            .with_context(|| format!("no lib{lib}.so.* in {}", root.join("lib").display()))?;
        std::os::unix::fs::symlink(&real, &link)?;
    }
    let libcuda = stubs.join("libcuda.so");
    if libcuda.exists() {
        return Ok(());
    }
    let sys = cudarc_driver_sys()?;
    let text = std::fs::read_to_string(&sys)?;
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix("fn cu")?;
            let end = l.find('(')?;
            Some(&l[..end])
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    anyhow::ensure!(
        names.len() > 100,
        "found only {} driver functions in {}",
        names.len(),
        sys.display()
    );
    let c_src: String = names
        .iter()
        .map(|n| format!("void cu{n}(void) {{}}\n"))
        .collect();
    let src = stubs.join("libcuda-stub.c");
    std::fs::write(&src, c_src)?;
    let mut c = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    c.args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&libcuda)
        .arg(&src);
    crate::run(c)
}

/// cudarc's driver bindings in cargo's registry sources (the version in Cargo.lock).
fn cudarc_driver_sys() -> Result<PathBuf> {
    let lock = std::fs::read_to_string(crate::root().join("Cargo.lock"))?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"cudarc\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .context("no cudarc in Cargo.lock")?
        .to_string();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    for reg in std::fs::read_dir(home.join("registry").join("src"))? {
        let p = reg?
            .path()
            .join(format!("cudarc-{version}"))
            .join("src/driver/sys/mod.rs");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("cudarc {version}'s sources are not in cargo's registry: run `cargo fetch`")
}
