//! `zoo serve` on loopback with the real SmolLM2 GGUF, driven by the official `openai`
//! Python package (cli/tests/openai_e2e.py): a completion, a streamed chat completion,
//! a bad request, a disconnect mid-stream followed by an unaffected request whose
//! sequence the engine frees, 16 concurrent seeded streams each equal to the same
//! request alone, `n` = 2 with logprobs, chat logprobs, a prompt list, the usage chunk,
//! and a bounded load test of 64 concurrent streamed requests (figures printed). Then
//! SIGTERM: the server stops cleanly.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_openai_client_drives_zoo_serve() {
    let model = zoo_tests::real_model("smollm2").unwrap();
    let python = zoo_tests::openai_python().unwrap();
    let (mut server, base) =
        zoo_tests::http::start_serve(env!("CARGO_BIN_EXE_zoo"), &["--queue-depth", "40"], &model);
    zoo_tests::http::wait_ready(&base, Duration::from_secs(300));

    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_e2e.py"))
        .arg(&base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("load test: {stdout}");
    let ok = out.status.success();
    if !ok {
        let _ = server.kill();
    }
    assert!(
        ok,
        "openai client checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(figures["failed"], 0);
    assert_eq!(
        figures["ok"].as_u64().unwrap() + figures["rejected_429"].as_u64().unwrap(),
        64
    );

    // Graceful shutdown on SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    loop {
        if let Some(s) = server.try_wait().unwrap() {
            assert!(s.success(), "zoo serve exited with {s} on SIGTERM");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "zoo serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
