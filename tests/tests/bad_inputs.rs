//! Every bad input of the corpus (`zoo_tests::hostile`: valid tiny fixtures broken in
//! one way each) through the real `zoo` binary: `zoo inspect` and `zoo run` exit
//! non-zero, print no panic, name the expected error kind and what was found, within
//! a time bound and a memory bound.
//!
//! - Time: 10 s per command. A tiny checkpoint loads in well under a second in a
//!   debug build; 10 s leaves room for a loaded 2-core machine and still catches a
//!   loop over a count read from the file (2^40 iterations take hours).
//! - Memory: the child's peak RSS at most 2x the case's bytes + 64 MiB, the issue's
//!   bound, with the binary's own baseline (measured on the valid fixtures and
//!   printed) inside the 64 MiB. Asserted on `wait4`'s `ru_maxrss`, an upper bound:
//!   Linux folds into it the RSS of the test process the child was spawned from (the
//!   address space it replaced at exec). The child's own peak, sampled from
//!   `/proc/<pid>/status` (VmHWM) every 5 ms, is printed beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zoo_tests::hostile::{self, Case, Kind};

const TIME_LIMIT: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

/// The `zoo` binary of this build, built by the cargo running this test.
fn zoo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "-p", "zoo-cli", "--bin", "zoo"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "building the zoo binary failed");
    profile_dir.join("zoo")
}

struct Outcome {
    exit: Option<i32>,
    stderr: String,
    /// `ru_maxrss`: the child's peak, or the test process's if larger.
    peak_rss: u64,
    /// The child's own VmHWM as last sampled before it exited.
    sampled_hwm: u64,
    took: Duration,
}

/// VmHWM of a running process, in bytes.
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `zoo args`, measuring the child's own peak RSS with `wait4`.
// The child is reaped by `wait4` below, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(zoo: &Path, args: &[&str]) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(zoo)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning zoo");
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).ok();
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut sampled_hwm = 0;
    loop {
        if let Some(h) = vm_hwm(pid) {
            sampled_hwm = h;
        }
        // SAFETY: `pid` is our child, not yet reaped; the pointers are to locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if start.elapsed() > TIME_LIMIT {
            child.kill().ok();
            // SAFETY: as above, blocking until the killed child is reaped.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let exit = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Outcome {
        exit,
        stderr: reader.join().unwrap_or_default(),
        peak_rss: usage.ru_maxrss as u64 * 1024,
        sampled_hwm,
        took,
    }
}

/// What went wrong with one command on one case, if anything.
fn judge(case: &Case, command: &str, o: &Outcome, must_fail: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let what = format!("{} ({command})", case.name);
    let bound = 2 * case.size() + 64 * MIB;
    if o.took > TIME_LIMIT {
        bad.push(format!("{what}: still running after {TIME_LIMIT:?}"));
    }
    if o.stderr.contains("panicked at") {
        bad.push(format!("{what}: panicked: {}", o.stderr));
    }
    if o.peak_rss > bound {
        bad.push(format!(
            "{what}: peak RSS {} MiB over the bound {} MiB",
            o.peak_rss / MIB,
            bound / MIB
        ));
    }
    if !must_fail {
        return bad;
    }
    if o.exit == Some(0) || o.exit.is_none() {
        bad.push(format!("{what}: exit {:?}, expected a failure", o.exit));
    }
    if !o.stderr.contains(case.kind.phrase()) || !o.stderr.contains(&case.says) {
        bad.push(format!(
            "{what}: expected {:?} (\"{}\") saying \"{}\", got: {}",
            case.kind,
            case.kind.phrase(),
            case.says,
            o.stderr.trim()
        ));
    }
    bad
}

#[test]
fn every_bad_input_is_a_typed_error_within_time_and_memory() {
    let zoo = zoo_binary();
    let dir = tempfile::tempdir().unwrap();
    let cases = hostile::corpus(dir.path()).unwrap();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let started = Instant::now();

    // The valid fixtures the corpus breaks: the baseline, and proof the corpus's
    // writer makes loadable files (so each case fails for its one fault).
    let fixtures = hostile::fixtures();
    let valid_gguf = dir.path().join("valid.gguf");
    std::fs::write(&valid_gguf, hostile::gguf_cases::valid().unwrap().bytes()).unwrap();
    let valid_dir = fixtures.join("llama/f32");
    let mut baseline = 0;
    for path in [&valid_gguf, &valid_dir] {
        let p = path.to_str().unwrap();
        for args in [
            vec!["inspect", p],
            vec!["run", "-m", p, "-p", "Hi", "-n", "1"],
        ] {
            let o = run(&zoo, &args);
            assert_eq!(o.exit, Some(0), "{args:?} on a valid file: {}", o.stderr);
            baseline = baseline.max(o.sampled_hwm);
        }
    }

    let mut failures = Vec::new();
    let mut by_kind: std::collections::BTreeMap<Kind, usize> = Default::default();
    let (mut worst_rss, mut worst_hwm, mut slowest) = (0u64, 0u64, Duration::ZERO);
    for case in &cases {
        *by_kind.entry(case.kind).or_default() += 1;
        let p = case.path.to_str().unwrap();
        let inspect = run(&zoo, &["inspect", p]);
        failures.extend(judge(case, "inspect", &inspect, case.inspect_sees));
        let run_ = run(&zoo, &["run", "-m", p, "-p", "Hi", "-n", "1"]);
        failures.extend(judge(case, "run", &run_, true));
        for o in [&inspect, &run_] {
            worst_rss = worst_rss.max(o.peak_rss);
            worst_hwm = worst_hwm.max(o.sampled_hwm);
            slowest = slowest.max(o.took);
        }
    }
    eprintln!(
        "{} bad inputs ({} seen by inspect without loading), by kind: {by_kind:?}",
        cases.len(),
        cases.iter().filter(|c| c.inspect_sees).count()
    );
    eprintln!(
        "peak RSS: valid fixtures (baseline, sampled VmHWM) {} MiB; bad inputs: sampled {} MiB, ru_maxrss (with the test process's) {} MiB; slowest command {slowest:?}; all {} commands in {:?}",
        baseline / MIB,
        worst_hwm / MIB,
        worst_rss / MIB,
        2 * cases.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The bodies of the `gguf_header` and `safetensors_header` fuzz targets, run in
/// process on every file of the corpus: none panics.
use zoo_tests::fuzz::{
    gguf_header as fuzz_gguf_header, safetensors_header as fuzz_safetensors_header,
};

#[test]
fn the_header_fuzz_bodies_take_every_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cases = hostile::corpus(dir.path()).unwrap();
    let mut files = 0;
    for case in &cases {
        let paths: Vec<PathBuf> = if case.path.is_dir() {
            std::fs::read_dir(&case.path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        } else {
            vec![case.path.clone()]
        };
        for p in paths {
            let bytes = std::fs::read(&p).unwrap();
            fuzz_gguf_header::run(&bytes);
            fuzz_safetensors_header::run(&bytes);
            files += 1;
        }
    }
    assert!(files > cases.len());
    // The valid fixture passes the GGUF body's checks to the tokenizer.
    let valid = hostile::gguf_cases::valid().unwrap().bytes();
    assert!(zoo::GgufSource::from_bytes(&valid).is_ok());
    fuzz_gguf_header::run(&valid);
    zoo_tests::fuzz::remove_scratch_dir();
}
