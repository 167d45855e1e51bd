//! The real Gemma 3 270M Q4_K_M GGUF (SentencePiece-style tokenizer) against what
//! llama.cpp produced on it (tests/data/reference/f16-kv/gemma3-270m-q4_k_m.json: tokenization and
//! text; f32-kv/gemma3.json: logits step by step).

use zoo::{CausalLM, ModelSource, Tokenizer, TokenizerKind};
use zoo_tests::tolerance::Rule;
use zoo_tests::{real_model, reference};

const REFERENCE: &str = "f16-kv/gemma3-270m-q4_k_m";

fn tokenizer() -> Tokenizer {
    let path = real_model("gemma3").unwrap();
    Tokenizer::for_source(&ModelSource::open(path).unwrap()).unwrap()
}

#[test]
fn tokenization_and_prompt_ids_match_llama_cpp_exactly() {
    let r = reference(REFERENCE).unwrap();
    let tk = tokenizer();
    assert_eq!(
        tk.kind(),
        &TokenizerKind::GgufSpm {
            add_space_prefix: false
        }
    );
    let mut failures = Vec::new();
    for case in &r.tokenize {
        let ids = tk.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  llama.cpp: {:?}\n  zoo:       {:?}",
                case.text, case.ids, ids
            ));
        }
    }
    assert!(r.add_bos_token);
    for case in &r.generate {
        let ids = tk.encode_prompt(&case.prompt).unwrap();
        if ids != case.prompt_ids {
            failures.push(format!(
                "prompt {:?}\n  llama.cpp: {:?}\n  zoo:       {:?}",
                case.prompt, case.prompt_ids, ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "tokenization differs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn streamed_detokenization_after_a_prompt_keeps_the_space() {
    let r = reference(REFERENCE).unwrap();
    let tk = tokenizer();
    for case in &r.generate {
        let mut stream = tk.stream_after(&case.prompt_ids, true);
        let mut text = String::new();
        for &id in &case.continuation_ids {
            if let Some(p) = stream.push(id).unwrap() {
                assert!(!p.contains('\u{FFFD}'), "{p:?}");
                text.push_str(&p);
            }
        }
        text.extend(stream.finish().unwrap());
        assert_eq!(text, case.continuation_text, "{:?}", case.prompt);
    }
}

/// Step by step against llama.cpp with an f32 KV cache. Both compute GELU from
/// llama.cpp's f16 table, and Q4_K/Q6_K weights times activations quantized to q8_K
/// blocks of 256; over 18 layers the q8 roundings that float noise flips add up
/// ([`Rule::RealModelQ8`], measured on llama.cpp against itself).
#[test]
fn continuations_match_llama_cpp_f32_kv_step_by_step() {
    let mut m = zoo::load(real_model("gemma3").unwrap(), &Default::default()).unwrap();
    assert_eq!(m.entry.name, "quantized-gemma3");
    assert_eq!(m.model.vocab_size(), 262144);
    zoo_tests::assert_matches_llama_cpp_f32_kv(&mut m, "gemma3", Rule::RealModelQ8);
}
