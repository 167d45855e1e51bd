//! `zoo serve`'s life as a load balancer sees it, on the real SmolLM2 GGUF: the address
//! answers `/health` 503 "loading" before the model has loaded, 200 "ready" after its
//! warmup; `/metrics` carries the memory report; on SIGTERM `/health` turns 503
//! "draining" and new requests get 503 while the request in flight streams to its end;
//! then the server exits 0.

use std::process::Command;
use std::time::{Duration, Instant};

use zoo_tests::http::{request, wait_ready};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn loading_ready_draining_then_exit() {
    let model = zoo_tests::real_model("smollm2").unwrap();
    let (mut server, base) = zoo_tests::http::start_serve(env!("CARGO_BIN_EXE_zoo"), &[], &model);

    // The line is printed before loading starts; loading and the warmup request take
    // well over the milliseconds this request needs.
    let (status, body) = request(&base, "GET", "/health", None).unwrap();
    assert_eq!(
        (status, body.contains("\"loading\"")),
        (503, true),
        "{body}"
    );
    let (status, body) = request(
        &base,
        "POST",
        "/v1/completions",
        Some(r#"{"prompt":"Hi","max_tokens":1}"#),
    )
    .unwrap();
    assert_eq!(status, 503, "a generation request while loading: {body}");

    wait_ready(&base, Duration::from_secs(300));
    let (_, body) = request(&base, "GET", "/health", None).unwrap();
    assert!(body.contains("\"ready\""), "{body}");
    let (_, metrics) = request(&base, "GET", "/metrics", None).unwrap();
    let checkpoint = metric(&metrics, "zoo_checkpoint_bytes");
    assert_eq!(checkpoint, std::fs::metadata(&model).unwrap().len());
    let resident = metric(&metrics, "zoo_weights_resident_bytes");
    // Q4_1 weights are copied out of the map as they are: the resident growth is the
    // weights (at least half the file: the embedding alone is a third of it) plus the
    // tokenizer, and far from an f32 copy (8x the file).
    assert!(
        resident > checkpoint / 2 && resident < 3 * checkpoint,
        "{resident} vs {checkpoint}"
    );
    assert!(metric(&metrics, "zoo_kv_cache_bytes") > 0);
    assert!(metric(&metrics, "zoo_peak_resident_bytes") >= metric(&metrics, "zoo_resident_bytes"));

    // A long streamed request in flight when SIGTERM comes.
    let stream_base = base.clone();
    let in_flight = std::thread::spawn(move || {
        request(
            &stream_base,
            "POST",
            "/v1/completions",
            Some(
                r#"{"prompt":"Once upon a time","max_tokens":96,"ignore_eos":true,"stream":true}"#,
            ),
        )
    });
    let t = Instant::now();
    loop {
        let (_, m) = request(&base, "GET", "/metrics", None).unwrap();
        if metric(&m, "zoo_sequences_running") == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the request never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(100));
    let (status, body) = request(&base, "GET", "/health", None).unwrap();
    assert_eq!(
        (status, body.contains("\"draining\"")),
        (503, true),
        "{body}"
    );
    let (status, body) = request(
        &base,
        "POST",
        "/v1/completions",
        Some(r#"{"prompt":"Hi","max_tokens":1}"#),
    )
    .unwrap();
    assert_eq!(status, 503, "a new request while draining: {body}");

    let (status, body) = in_flight.join().unwrap().expect("the stream answered");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"finish_reason\":\"length\"") && body.contains("[DONE]"),
        "{body}"
    );
    let t = Instant::now();
    loop {
        if let Some(s) = server.try_wait().unwrap() {
            assert!(s.success(), "zoo serve exited with {s} after draining");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "zoo serve did not stop after draining"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
