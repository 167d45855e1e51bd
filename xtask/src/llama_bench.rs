//! llama.cpp's own `llama-bench` (built by [`crate::llama_cpp`]) on a GGUF, for
//! `cargo xtask bench --llama-cpp`: prompt and decode tokens per second as llama.cpp
//! measures them, and the process's peak RSS, with no Python in the way (the binding's
//! per-token overhead flattered zoo).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// `llama-bench -p P -n N -r R -t T [-d D]`: `{"pp": {"tok_s"}, "tg": {"tok_s"},
/// "peak_rss_bytes"}` in the shape `zoo bench --json` writes.
pub(crate) fn run(
    model: &Path,
    prompt: &str,
    decode: &str,
    reps: &str,
    threads: &str,
    depth: Option<&str>,
) -> Result<serde_json::Value> {
    let bin = crate::llama_cpp::binaries()?.join("llama-bench");
    // GNU time reports the peak RSS (KiB) of the command on stderr with `-f %M`.
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M"]).arg(&bin).arg("-m").arg(model);
    c.args([
        "-p", prompt, "-n", decode, "-r", reps, "-t", threads, "-o", "json",
    ]);
    if let Some(d) = depth {
        c.args(["-d", d]);
    }
    eprintln!("xtask: {c:?}");
    let out = c
        .output()
        .context("running llama-bench (via /usr/bin/time)")?;
    anyhow::ensure!(
        out.status.success(),
        "llama-bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("llama-bench's JSON")?;
    let rate = |prompt: bool| -> f64 {
        rows.as_array()
            .into_iter()
            .flatten()
            .find(|r| (r["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt)
            .and_then(|r| r["avg_ts"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok(serde_json::json!({
        "pp": {"tok_s": rate(true)},
        "tg": {"tok_s": rate(false)},
        "peak_rss_bytes": kib * 1024.0,
    }))
}
