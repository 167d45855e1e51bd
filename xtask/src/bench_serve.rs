//! `cargo xtask bench --serve`: an HTTP load benchmark of `zoo serve` side by side with
//! llama.cpp's `llama-server`, on the same GGUF, with the same threads, slots and load.
//!
//! The servers run one after the other, never together (they would share the cores),
//! each on a free local port, and each is killed after its run. The load is
//! `xtask/refgen/serve_load.py` (streamed `/v1/completions`, see its docstring for what
//! is measured and how), run with the Python of the end-to-end server test (the openai
//! package's httpx). Its JSON lines go to stdout; the side-by-side table and progress go
//! to stderr. With `--baseline REV`, `zoo serve` as built at that revision runs first
//! under the same load (baseline.rs), and the table adds its column and today's ratio
//! to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{baseline, cargo, refgen::cache_dir, root};

/// Requests served at once by each server: `zoo serve --parallel` and llama-server `-np`.
const SLOTS: usize = 16;
/// The longest prompt of the driver, in tokens, with room for other tokenizers (the
/// known models' tokenizers make 107 to 134): llama-server gives each slot an equal
/// share of `-c`, so each share must hold a prompt and its completion.
const PROMPT_TOKENS_MAX: usize = 160;
/// A level cut off after this long counts its unfinished requests as errors; zoo's
/// per-request timeout is the same, so that neither server gives up first.
const LEVEL_TIMEOUT_S: u64 = 900;
/// Loading (and for zoo, a known model's first fetch) must end within this.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// What `bench --serve` was asked for.
struct Options {
    model: String,
    levels: Vec<usize>,
    new_tokens: usize,
    threads: usize,
    zoo: bool,
    llama: bool,
    /// A git revision whose `zoo serve` runs too (`--baseline`).
    baseline: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let value = |flag: &str| -> Option<&str> {
            let i = args.iter().position(|a| a == flag)?;
            args.get(i + 1).map(String::as_str)
        };
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let known = [
            "--serve",
            "--model",
            "-m",
            "--levels",
            "--new-tokens",
            "--threads",
            "--zoo-only",
            "--llama-only",
            "--baseline",
        ];
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            ensure!(
                known.contains(&a.as_str()),
                "bench --serve: unknown argument `{a}`"
            );
            if !matches!(a.as_str(), "--serve" | "--zoo-only" | "--llama-only") {
                rest.next();
            }
        }
        let model = value("--model")
            .or_else(|| value("-m"))
            .context("bench --serve needs --model PATH_OR_NAME")?;
        let levels = value("--levels")
            .unwrap_or("1,4,16,64")
            .split(',')
            .map(|l| l.trim().parse::<usize>().ok().filter(|&l| l > 0))
            .collect::<Option<Vec<_>>>()
            .context("--levels: positive integers separated by commas")?;
        let number = |flag: &str, default: usize| -> Result<usize> {
            value(flag).map_or(Ok(default), |v| {
                v.parse()
                    .with_context(|| format!("{flag} {v}: not a number"))
            })
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ensure!(
            !(has("--zoo-only") && has("--llama-only")),
            "--zoo-only and --llama-only exclude each other"
        );
        Ok(Self {
            model: model.to_string(),
            levels,
            new_tokens: number("--new-tokens", 128)?,
            threads: number("--threads", cores)?,
            zoo: !has("--llama-only"),
            llama: !has("--zoo-only"),
            baseline: value("--baseline").map(str::to_string),
        })
    }
}

/// Runs the benchmark: each requested server in turn, then the table.
pub fn bench_serve(args: &[String]) -> Result<()> {
    let o = Options::parse(args)?;
    let python = python()?;
    // Built only when needed: to serve, or to resolve a known model's name.
    let is_path = Path::new(&o.model).exists();
    let zoo = if o.zoo || !is_path {
        Some(zoo_binary()?)
    } else {
        None
    };
    let model = if is_path {
        std::fs::canonicalize(&o.model)?
    } else {
        fetch(zoo.as_deref().expect("built above"), &o.model)?
    };
    eprintln!(
        "xtask: serve benchmark of {}: levels {:?}, {} new tokens, {} threads, {SLOTS} slots",
        model.display(),
        o.levels,
        o.new_tokens,
        o.threads
    );
    // Built before any server starts, so that no build shares the cores with a run.
    let baseline = o.baseline.as_deref().map(baseline::zoo_at).transpose()?;
    let mut baseline_records = Vec::new();
    if let Some(bin) = baseline {
        // Only the flags every `zoo serve` has had: the revision may predate the rest.
        let (c, port) = zoo_serve(&bin, &model, &o)?;
        let server = Server::start("zoo-baseline", c, port)?;
        baseline_records = drive(&python, &server, &o)?;
    }
    let mut zoo_records = Vec::new();
    if let Some(zoo) = zoo.filter(|_| o.zoo) {
        let (mut c, port) = zoo_serve(&zoo, &model, &o)?;
        c.args(["--parallel", &SLOTS.to_string()]);
        let server = Server::start("zoo", c, port)?;
        zoo_records = drive(&python, &server, &o)?;
    }
    let mut llama_records = Vec::new();
    if o.llama {
        let bin = crate::llama_cpp::binaries()?;
        let port = free_port()?;
        let per_slot = (PROMPT_TOKENS_MAX + o.new_tokens).next_multiple_of(64);
        let mut c = Command::new(bin.join("llama-server"));
        c.arg("-m")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", &SLOTS.to_string()])
            .args(["-c", &(SLOTS * per_slot).to_string()])
            .args(["-t", &o.threads.to_string()])
            .arg("--cont-batching")
            // Its generated-token counter, which the driver reads as it reads zoo's.
            .arg("--metrics");
        let server = Server::start("llama.cpp", c, port)?;
        llama_records = drive(&python, &server, &o)?;
    }
    table(&o, &zoo_records, &llama_records, &baseline_records);
    Ok(())
}

/// `zoo serve` of `bin` on `model` and a free port, with the flags every version has
/// had: a queue deep enough that the largest level is never refused with 429, the
/// level's timeout, and `o.threads` threads (zoo's pool is rayon's, candle's, sized by
/// `RAYON_NUM_THREADS`).
fn zoo_serve(bin: &Path, model: &Path, o: &Options) -> Result<(Command, u16)> {
    let port = free_port()?;
    let queue_depth = o.levels.iter().copied().max().unwrap_or(1);
    let mut c = Command::new(bin);
    c.arg("serve")
        .arg("--model")
        .arg(model)
        .args(["--port", &port.to_string()])
        .args(["--queue-depth", &queue_depth.to_string()])
        .args(["--timeout-s", &LEVEL_TIMEOUT_S.to_string()])
        .env("RAYON_NUM_THREADS", o.threads.to_string());
    Ok((c, port))
}

/// The 1-minute load average, printed as each server starts: other work on the cores
/// (a build) slows both servers, and more than anything their latency tails.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The release `zoo` binary, built as `cargo xtask bench` builds it (`zoo_release`), its
/// path taken from cargo's own report rather than guessed from the target directory.
pub(crate) fn zoo_binary() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "zoo-cli", "--bin", "zoo"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit());
    eprintln!("xtask: {c:?}");
    let out = c.output().context("building zoo")?;
    ensure!(out.status.success(), "building zoo failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "zoo")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo reported no zoo executable")
}

/// A known model's path (`zoo fetch NAME` downloads it once and prints where it is), so
/// that llama-server reads the very file zoo does.
pub(crate) fn fetch(zoo: &Path, name: &str) -> Result<PathBuf> {
    let out = Command::new(zoo)
        .args(["fetch", name])
        .stderr(Stdio::inherit())
        .output()
        .context("running zoo fetch")?;
    ensure!(out.status.success(), "zoo fetch {name} failed");
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// The Python with httpx: `$ZOO_OPENAI_PYTHON`, else the virtual environment that the
/// end-to-end server test (`cli/tests/serve_openai.rs`) makes in the zoo cache.
pub(crate) fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ZOO_OPENAI_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let p = cache_dir().join("openai-venv/bin/python");
    if !p.is_file() {
        bail!(
            "no {}: `cargo test -p zoo-cli --test serve_openai` makes it, or set \
             ZOO_OPENAI_PYTHON to a Python with httpx",
            p.display()
        );
    }
    Ok(p)
}

/// A port free now: the OS picks it, and it is released for the server to take.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running server, killed when dropped (on error paths too), so that the next one has
/// the cores to itself and none outlives the benchmark.
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    /// Starts `c` with its output in a log file and waits until `GET /health` is 200
    /// (both answer 503 while loading).
    pub(crate) fn start(name: &'static str, mut c: Command, port: u16) -> Result<Self> {
        let log =
            std::env::temp_dir().join(format!("zoo-bench-serve-{}.log", name.replace('.', "")));
        let file = std::fs::File::create(&log)?;
        c.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        eprintln!(
            "xtask: starting {name} (load average {}; log: {}): {c:?}",
            load_average(),
            log.display()
        );
        let started = Instant::now();
        let child = c.spawn().with_context(|| format!("starting {c:?}"))?;
        let mut server = Self { name, child, port };
        while !healthy(port) {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before it was ready:\n{}",
                    tail(&log)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("{name} not ready after {READY_TIMEOUT:?}:\n{}", tail(&log));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "xtask: {name} ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("xtask: {} stopped", self.name);
    }
}

/// Whether `GET /health` on the port answers 200 (a bare HTTP/1.1 request: xtask has
/// no HTTP client, and needs none for this).
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut status = [0u8; 12];
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut status).is_ok()
        && &status == b"HTTP/1.1 200"
}

/// The last lines of a server's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs the driver against `server`; its JSON lines are echoed to stdout as they come.
fn drive(python: &Path, server: &Server, o: &Options) -> Result<Vec<Value>> {
    let levels: Vec<String> = o.levels.iter().map(usize::to_string).collect();
    let mut c = Command::new(python);
    c.arg(root().join("xtask/refgen/serve_load.py"))
        .args(["--url", &format!("http://127.0.0.1:{}", server.port)])
        .args(["--server", server.name])
        .args(["--levels", &levels.join(",")])
        .args(["--new-tokens", &o.new_tokens.to_string()])
        .args(["--level-timeout-s", &LEVEL_TIMEOUT_S.to_string()])
        .stdout(Stdio::piped());
    eprintln!("xtask: {c:?}");
    let mut child = c.spawn().context("running serve_load.py")?;
    let mut records = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        records.push(serde_json::from_str(&line).with_context(|| format!("driver said {line:?}"))?);
    }
    let status = child.wait()?;
    ensure!(
        status.success(),
        "serve_load.py against {} failed: {status}",
        server.name
    );
    Ok(records)
}

/// The side-by-side table on stderr: per level and metric, zoo, llama.cpp and their
/// ratio, then with a baseline its figure and zoo's ratio to it (a missing side prints
/// `-`).
fn table(o: &Options, zoo: &[Value], llama: &[Value], baseline: &[Value]) {
    let at = |records: &[Value], level: usize| -> Option<Value> {
        records.iter().find(|r| r["level"] == level).cloned()
    };
    let metrics: [(&str, &[&str], f64); 6] = [
        ("tok/s", &["tok_s"], 1.0),
        ("TTFT p50 ms", &["ttft_s", "p50"], 1e3),
        ("TTFT p99 ms", &["ttft_s", "p99"], 1e3),
        ("ITL p50 ms", &["itl_s", "p50"], 1e3),
        ("ITL p99 ms", &["itl_s", "p99"], 1e3),
        ("errors", &["errors"], 1.0),
    ];
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let rev = o.baseline.as_deref().filter(|_| !baseline.is_empty());
    eprintln!(
        "\nmodel: {}  new tokens: {}  threads: {}  slots: {SLOTS}",
        o.model, o.new_tokens, o.threads
    );
    match rev {
        Some(rev) => {
            eprintln!("| level | metric | zoo | llama.cpp | zoo / llama.cpp | zoo at {rev} | zoo / {rev} |");
            eprintln!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
        }
        None => {
            eprintln!("| level | metric | zoo | llama.cpp | zoo / llama.cpp |");
            eprintln!("| ---: | --- | ---: | ---: | ---: |");
        }
    }
    for &level in &o.levels {
        let (z, l, b) = (at(zoo, level), at(llama, level), at(baseline, level));
        for (label, path, scale) in metrics {
            let get = |r: &Option<Value>| {
                let v = path.iter().fold(r.as_ref()?, |v, k| &v[*k]);
                v.as_f64().map(|v| v * scale)
            };
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b != 0.0 && label != "errors" => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let (zv, lv, bv) = (get(&z), get(&l), get(&b));
            let mut row = format!(
                "| {level} | {label} | {} | {} | {} |",
                cell(zv),
                cell(lv),
                ratio(zv, lv)
            );
            if rev.is_some() {
                row += &format!(" {} | {} |", cell(bv), ratio(zv, bv));
            }
            eprintln!("{row}");
        }
    }
}
