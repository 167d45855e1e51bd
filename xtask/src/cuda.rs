//! The CUDA toolchain from Python packages, for machines without a GPU or a CUDA
//! install: `cargo xtask cuda-check` (the `cuda` feature compiles: candle's kernels
//! through nvcc to PTX, cudarc, zoo's device code) and `cargo xtask gpu-build` (a
//! release `zoo` with `--features cuda`, linked against the CUDA libraries of the
//! same packages, for a machine with an NVIDIA GPU; gpu_check.rs runs it there).
//!
//! The packages are pinned to CUDA 13.0, the version the lent H200 machines' driver
//! (580) runs: PTX from a newer nvcc would not load there. They go into a virtual
//! environment in the zoo cache (`cuda-venv`), made on first use.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::refgen::{cache_dir, system_python};

/// nvcc and the headers candle-kernels includes (cuda.h, cuda_runtime.h, cuda_bf16.h,
/// cuda_fp8.h; thrust and cub from CCCL). All the CUDA 13.0 release.
const COMPILER: [&str; 5] = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
];

/// The libraries cudarc links (`dynamic-linking`, candle's choice), for `gpu-build`
/// only: cuBLAS (with cuBLASLt), cuRAND, NVRTC of CUDA 13.0.
const LIBRARIES: [&str; 3] = [
    "nvidia-cublas==13.0.0.19",
    "nvidia-curand==10.4.0.35",
    "nvidia-cuda-nvrtc==13.0.88",
];

/// The compute capability the kernels are compiled for when no GPU is there to ask
/// (`CUDA_COMPUTE_CAP`): 80 (Ampere); PTX for 8.0 runs on 8.0 and later (the H200 is
/// 9.0), by the driver's JIT.
pub const DEFAULT_COMPUTE_CAP: &str = "80";

/// The CUDA root in the virtual environment (`bin/nvcc`, `include`, `lib`), the
/// packages installed first if missing. `libraries` adds cuBLAS, cuRAND and NVRTC.
pub fn toolkit(libraries: bool) -> Result<PathBuf> {
    let venv = cache_dir().join("cuda-venv");
    let python = venv.join("bin").join("python");
    let mut wanted: Vec<&str> = COMPILER.to_vec();
    if libraries {
        wanted.extend(LIBRARIES);
    }
    let stamp = venv.join(format!(".zoo-ready-{}", short_hash(&wanted.join(" "))));
    if !stamp.is_file() {
        if !python.is_file() {
            let mut c = Command::new(system_python());
            c.args(["-m", "venv"]).arg(&venv);
            crate::run(c)?;
        }
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(&wanted);
        crate::run(c)?;
        std::fs::write(&stamp, wanted.join("\n"))?;
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .context("asking the CUDA venv's python for its site-packages")?;
    let site = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let root = site.join("nvidia").join("cu13");
    anyhow::ensure!(
        root.join("bin").join("nvcc").is_file(),
        "no nvcc in {}: the nvidia-cuda-nvcc package changed its layout",
        root.display()
    );
    Ok(root)
}

/// A stable short name for a set of pins (the stamp file's).
fn short_hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

/// `cargo` with the toolkit's nvcc on PATH and the variables candle-kernels
/// (cudaforge), cudarc and bindgen read; its own target dir (`target/cuda` unless
/// `CARGO_TARGET_DIR` is set), so the CPU build's artifacts are not rebuilt.
pub fn cargo_with(root: &std::path::Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(crate::root());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![root.join("bin")];
    paths.extend(std::env::split_paths(&path));
    c.env("PATH", std::env::join_paths(paths).expect("PATH entries"))
        .env("CUDA_HOME", root)
        .env("CUDA_PATH", root)
        .env("CUDA_ROOT", root)
        .env("NVCC", root.join("bin").join("nvcc"))
        .env(
            "CUDA_COMPUTE_CAP",
            std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| DEFAULT_COMPUTE_CAP.into()),
        )
        // Kernels, not benchmarks: a one-off build gains nothing from incremental state.
        .env("CARGO_INCREMENTAL", "0");
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        c.env(
            "CARGO_TARGET_DIR",
            crate::root().join("target").join("cuda"),
        );
    }
    c
}

/// `cargo xtask cuda-check [--kernels] [--full]`: `cargo check` of the crates whose
/// code changes with the `cuda` feature (zoo-core, zoo-models, zoo, zoo-cli; their
/// library and binary targets, and with them candle's and cudarc's CUDA code), with
/// the PyPI CUDA toolkit: cudarc reads its CUDA version from that nvcc.
///
/// candle-kernels' build script would compile every CUDA kernel on the way (PTX, and a
/// static library of the MoE/MMQ kernels): the most of the check's time, and candle's
/// code at a pinned version, not zoo's. By default [`nvcc_stand_in`] answers those
/// compilations with empty outputs; `--kernels` runs the real nvcc on them (as
/// `gpu-build` does). `--full` adds every target of the workspace (tests, benches).
pub fn cuda_check(args: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    let root = toolkit(false)?;
    let kernels = args.iter().any(|a| a == "--kernels");
    let mut c = cargo_with(&root);
    if !kernels {
        let stand_in = nvcc_stand_in(&root)?;
        c.env("NVCC", &stand_in);
        // Its own target dir: the build script's outputs (empty kernels) must not be
        // mistaken for real ones by a later `gpu-build` or `--kernels` run.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::root().join("target").join("cuda"));
        c.env("CARGO_TARGET_DIR", target.join("check-no-kernels"));
    }
    if args.iter().any(|a| a == "--full") {
        c.args([
            "check",
            "--workspace",
            "--all-targets",
            "--features",
            "zoo/cuda",
        ]);
    } else {
        c.args(["check", "-p", "zoo-cli", "--features", "cuda"]);
    }
    crate::run(c)?;
    eprintln!(
        "xtask: cuda-check passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A script standing in for nvcc in the check without kernels: `--version` (and any
/// other query) goes to the real nvcc; a compilation (`--ptx`, `-c`, `--lib`) writes its
/// output files empty (an empty archive for `--lib`) and compiles nothing.
fn nvcc_stand_in(root: &std::path::Path) -> Result<PathBuf> {
    let dir = cache_dir().join("cuda-venv").join("nvcc-stand-in");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("nvcc");
    let script = format!(
        r#"#!/bin/sh
# zoo's cuda-check: nvcc without compiling (xtask/src/cuda.rs).
real="{real}"
out=""; outdir=""; mode=""; src=""; prev=""
for a in "$@"; do
  case "$prev" in
    -o) out="$a" ;;
    --output-directory) outdir="$a" ;;
  esac
  case "$a" in
    --ptx) mode=ptx ;;
    -c) mode=obj ;;
    --lib|-lib) mode=lib ;;
    *.cu) src="$a" ;;
  esac
  prev="$a"
done
case "$mode" in
  ptx) f="${{out:-$outdir/$(basename "$src" .cu).ptx}}"; printf '// not compiled: cargo xtask cuda-check\n' >"$f" ;;
  obj) : >"$out" ;;
  lib) printf '!<arch>\n' >"$out" ;;
  *) exec "$real" "$@" ;;
esac
"#,
        real = root.join("bin").join("nvcc").display()
    );
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
