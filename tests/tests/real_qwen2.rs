//! The real Qwen2.5-Coder-0.5B-Instruct GGUF (Q4_K_M mix, BPE with the `qwen2`
//! pre-tokenizer) against what llama.cpp produced on it
//! (tests/data/reference/f16-kv/qwen2.5-coder-0.5b-instruct-q4_k_m.json: tokenization;
//! f32-kv/qwen2.5-coder.json: logits step by step).

use zoo::CausalLM;
use zoo_tests::tolerance::Rule;
use zoo_tests::{real_model, reference, tokenization_failures};

const REFERENCE: &str = "f16-kv/qwen2.5-coder-0.5b-instruct-q4_k_m";

#[test]
fn tokenization_and_continuations_match_llama_cpp() {
    let r = reference(REFERENCE).unwrap();
    let mut m = zoo::load(real_model("qwen2.5-coder").unwrap(), &Default::default()).unwrap();
    assert_eq!(m.entry.name, "quantized-qwen2");
    assert_eq!(
        m.tokenizer.kind(),
        &zoo::TokenizerKind::GgufBpe {
            pre: "qwen2".into()
        }
    );
    // <|endoftext|> and the chat template's <|im_end|> both end generation.
    assert!(m.model.eos_token_ids().contains(&151643));
    assert!(m.model.eos_token_ids().contains(&151645));
    let failures = tokenization_failures(&m.tokenizer, &r);
    assert!(
        failures.is_empty(),
        "tokenization differs:\n{}",
        failures.join("\n")
    );
    // Step by step against llama.cpp with an f32 KV cache: Q4_K/Q6_K/Q8_0 weights
    // times activations quantized to 8-bit blocks over 24 layers (Rule::RealModelQ8,
    // measured on llama.cpp against itself).
    zoo_tests::assert_matches_llama_cpp_f32_kv(&mut m, "qwen2.5-coder", Rule::RealModelQ8);
}
