//! `zoo serve` under hostile clients (cli/tests/hostile_e2e.py): malformed, oversized
//! and non-UTF-8 bodies, wrong types and ranges for every parameter, a prompt past the
//! context, headers dribbled a byte at a time, a body and headers that stall (closed
//! after the 30 s timeouts), clients that vanish while queued or mid-stream (their
//! sequences freed), and 1,000 random requests, valid and not, 8 at a time: each
//! answered with the right status while the server keeps serving, and its resident set
//! after them within 10 % of before.

use std::process::Command;
use std::time::Duration;

#[test]
fn hostile_clients_get_the_right_answers_and_the_server_keeps_serving() {
    let model = zoo_tests::real_model("smollm2").unwrap();
    let python = zoo_tests::openai_python().unwrap();
    let (mut server, base) = zoo_tests::http::start_serve(
        env!("CARGO_BIN_EXE_zoo"),
        &[
            "--parallel",
            "8",
            "--queue-depth",
            "16",
            "--kv-cache-mib",
            "16",
        ],
        &model,
    );
    zoo_tests::http::wait_ready(&base, Duration::from_secs(300));
    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_e2e.py"))
        .args([&base, "1000"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hostile client checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("hostile clients: {stdout}");
    let figures: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert!(figures["rss_growth"].as_f64().unwrap().abs() <= 0.10);
}
