//! `zoo chat` on the real SmolLM2 GGUF: history is kept across turns, Ctrl-C (SIGINT)
//! stops the current answer and not the program, and a model without a chat template
//! is refused with the typed error instead of a guessed template.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn zoo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
}

#[test]
fn history_is_kept_across_turns() {
    let model = zoo_tests::real_model("smollm2").unwrap();
    let mut child = zoo()
        .args([
            "chat",
            "--temperature",
            "0",
            "-n",
            "6",
            "--log",
            "info",
            "--model",
        ])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\nAnd again\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(answers.len(), 2, "{stdout:?}");
    // The second prompt holds the first exchange: more tokens than the first prompt
    // plus its answer.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prompts: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.split("prompt_tokens=").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(prompts.len(), 2, "{stderr}");
    assert!(prompts[1] > prompts[0] + 6, "{prompts:?}");
}

#[test]
fn ctrl_c_stops_the_answer_not_the_program() {
    let model = zoo_tests::real_model("smollm2").unwrap();
    let mut child = zoo()
        .args(["chat", "--temperature", "0", "-n", "2000", "--model"])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"Write a very long story about a dragon.\n")
        .unwrap();
    stdin.flush().unwrap();
    // Wait for the answer to start.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let n = stdout.read(&mut buf).unwrap();
    assert!(n > 0);
    let t = Instant::now();
    let s = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.success());
    stdin.write_all(b"/exit\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "zoo chat exited with {status} after Ctrl-C"
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("(stopped)"), "{err}");
}

#[test]
fn a_model_without_a_template_is_refused() {
    let model = zoo_tests::real_model("gemma3").unwrap();
    let out = zoo()
        .args(["chat", "--model"])
        .arg(&model)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no chat template") && err.contains("--template"),
        "{err}"
    );
}
