//! `zoo inspect --memory` loads a model and reports its memory: the checkpoint's size
//! on disk, the resident growth of loading, and the KV cache per position and for the
//! full context (from the model's own KV shape), as JSON.

use std::path::Path;
use std::process::Command;

#[test]
fn memory_report_of_a_batching_gguf_fixture() {
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quantized-llama/q4_0/model.gguf");
    let out = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(["inspect", "--memory", "--json"])
        .arg(&gguf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "quantized-llama");
    assert_eq!(
        v["checkpoint_bytes"],
        std::fs::metadata(&gguf).unwrap().len()
    );
    // The fixture's KV cache: 2 (K and V) x layers x KV heads x head dim x 4 bytes (f32).
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(gguf.with_file_name("fixture.json")).unwrap(),
    )
    .unwrap();
    let per_position = v["kv_cache_bytes_per_position"].as_u64().unwrap();
    let context = v["context_length"].as_u64().unwrap();
    assert_eq!(
        v["kv_cache_bytes_full_context"].as_u64().unwrap(),
        per_position * context
    );
    let c = &fixture["spec"]["config"];
    let n = |k: &str| c[k].as_u64().unwrap();
    let head_dim = n("hidden_size") / n("num_attention_heads");
    assert_eq!(
        per_position,
        2 * n("num_hidden_layers") * n("num_key_value_heads") * head_dim * 4
    );
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
}
