//! The real Qwen2.5-Coder-0.5B-Instruct GGUF (Q4_K_M mix, BPE with the `qwen2`
//! pre-tokenizer) against what llama.cpp produced on it
//! (tests/data/reference/qwen2.5-coder-0.5b-instruct-q4_k_m.json).

use zoo::CausalLM;
use zoo_tests::{real_model, reference, tokenization_failures};

const REFERENCE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";

/// As for SmolLM2: both runtimes use the same integer dot products and differ only in
/// summation order, so a divergence at a gap above this is a real difference.
const NEAR_TIE: f32 = 0.25;

#[test]
fn tokenization_and_greedy_continuations_match_llama_cpp() {
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
    zoo_tests::assert_greedy_matches_up_to_near_tie(&mut m.model, &r, NEAR_TIE);
}

#[test]
fn long_prompt_continuations_match_llama_cpp_up_to_a_near_tie() {
    let mut m = zoo::load(real_model("qwen2.5-coder").unwrap(), &Default::default()).unwrap();
    zoo_tests::assert_long_prompts_match_llama_cpp(&mut m, "qwen2.5-coder", NEAR_TIE);
}
