//! Llama from safetensors on a tiny deterministic checkpoint: detection through the
//! registry, shapes, KV-cache consistency, reset, and config.json of transformers 4.x
//! and 5.x.

use std::ops::ControlFlow;

use candle_core::Tensor;
use zoo::{CausalLM, LoadOptions};
use zoo_tests::TinyLlama;

fn load(config: Option<serde_json::Value>) -> (tempfile::TempDir, zoo::Loaded) {
    let d = tempfile::tempdir().unwrap();
    let tiny = TinyLlama::default();
    tiny.write(d.path(), &config.unwrap_or_else(|| tiny.config()))
        .unwrap();
    let loaded = zoo::load(d.path(), &LoadOptions::default()).unwrap();
    (d, loaded)
}

fn logits(m: &mut dyn CausalLM, ids: &[u32], offset: usize) -> Vec<f32> {
    let t = Tensor::new(ids, m.device()).unwrap().unsqueeze(0).unwrap();
    let l = m.forward(&t, offset).unwrap();
    assert_eq!(l.dims(), &[1, m.vocab_size()]);
    assert_eq!(l.dtype(), candle_core::DType::F32);
    l.squeeze(0).unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const PROMPT: &[u32] = &[256, 72, 101, 108, 108, 111, 32, 119];

#[test]
fn detected_loaded_and_shaped() {
    let (_d, mut l) = load(None);
    assert_eq!(l.entry.name, "llama");
    assert_eq!(l.model.architecture(), "llama");
    // A built-in architecture loads as its own variant of the derived enum.
    assert!(matches!(l.model, zoo::Model::Llama(_)));
    assert_eq!(l.model.arch(), zoo::Arch::Llama);
    assert_eq!(l.model.eos_token_ids(), &[257]);
    assert_eq!(l.model.vocab_size(), 258);
    assert_eq!(l.model.context_length(), 64);
    let v = logits(&mut l.model, PROMPT, 0);
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn incremental_decode_matches_full_forward() {
    let (_d, mut l) = load(None);
    let m = &mut l.model;
    m.reset_cache().unwrap();
    let full = logits(m, PROMPT, 0);
    m.reset_cache().unwrap();
    let mut last = logits(m, &PROMPT[..3], 0);
    for (i, &t) in PROMPT.iter().enumerate().skip(3) {
        last = logits(m, &[t], i);
    }
    let d = max_diff(&full, &last);
    assert!(d < 1e-4, "incremental vs full forward differ by {d}");
}

#[test]
fn reset_really_resets() {
    let (_d, mut l) = load(None);
    let m = &mut l.model;
    m.reset_cache().unwrap();
    let first = logits(m, PROMPT, 0);
    // Pollute the cache with another sequence, then reset.
    logits(m, &[1, 2, 3], PROMPT.len());
    m.reset_cache().unwrap();
    let again = logits(m, PROMPT, 0);
    assert_eq!(first, again);
}

#[test]
fn generation_is_repeatable_and_ends() {
    let (_d, mut l) = load(None);
    let opts = zoo::GenerateOptions {
        max_tokens: 10,
        ..Default::default()
    };
    let mut run = || {
        zoo::generate(&mut l.model, &l.tokenizer, PROMPT, &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
    };
    let a = run();
    let b = run();
    assert_eq!(a.ids, b.ids);
    assert!(!a.ids.is_empty() && a.ids.len() <= 10);
}

#[test]
fn prompt_longer_than_the_context() {
    let (_d, mut l) = load(None);
    let ids = vec![65u32; 64];
    let e = zoo::generate(
        &mut l.model,
        &l.tokenizer,
        &ids,
        &Default::default(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            zoo::Error::PromptTooLong {
                prompt_tokens: 64,
                context_length: 64
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("shorten the prompt"));
}

#[test]
fn transformers_5_rope_parameters_are_read() {
    let tiny = TinyLlama {
        rope_theta: 100_000.0,
        ..Default::default()
    };
    let v4 = tiny.config();
    let mut v5 = tiny.config();
    let theta = v5.as_object_mut().unwrap().remove("rope_theta").unwrap();
    v5["rope_parameters"] = serde_json::json!({"rope_theta": theta, "rope_type": "default"});
    let mut default_theta = tiny.config();
    default_theta.as_object_mut().unwrap().remove("rope_theta");

    let run = |config: serde_json::Value| {
        let d = tempfile::tempdir().unwrap();
        tiny.write(d.path(), &config).unwrap();
        let mut l = zoo::load(d.path(), &LoadOptions::default()).unwrap();
        logits(&mut l.model, PROMPT, 0)
    };
    let a = run(v4);
    let b = run(v5);
    let c = run(default_theta);
    assert_eq!(
        a, b,
        "rope_parameters.rope_theta (5.x) must equal rope_theta (4.x)"
    );
    assert!(
        max_diff(&a, &c) > 1e-3,
        "rope_theta must matter, else this test proves nothing"
    );
}
