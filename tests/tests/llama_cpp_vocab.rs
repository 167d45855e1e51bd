//! Tokenizer conformance from llama.cpp's own test vectors: every vocab-only GGUF of
//! llama.cpp whose tokenizer kind zoo supports must reproduce every expected id list.
//! The list of vocabularies and their status is a snapshot.

use zoo::source::GgufSource;
use zoo::Tokenizer;
use zoo_tests::{llama_cpp_vocab_dir, vocab_cases};

#[test]
fn llama_cpp_vocab_vectors() {
    let dir = llama_cpp_vocab_dir().unwrap();
    let mut vocabs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("gguf"))
        .filter(|p| std::path::Path::new(&format!("{}.inp", p.display())).is_file())
        .collect();
    vocabs.sort();
    assert!(
        vocabs.len() >= 10,
        "only {} vocab files in {}",
        vocabs.len(),
        dir.display()
    );
    let mut status = Vec::new();
    let mut failures = Vec::new();
    for path in &vocabs {
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("ggml-vocab-", "")
            .replace(".gguf", "");
        let g = GgufSource::open(path).unwrap();
        let kind = g
            .str_opt("tokenizer.ggml.model")
            .unwrap()
            .unwrap_or("?")
            .to_string();
        let pre = g
            .str_opt("tokenizer.ggml.pre")
            .unwrap()
            .unwrap_or("-")
            .to_string();
        let tk = match Tokenizer::from_gguf(&g) {
            Ok(t) => t,
            Err(e) => {
                status.push(format!("{name}: {kind}/{pre}: unsupported ({e})"));
                continue;
            }
        };
        let cases = vocab_cases(path).unwrap();
        let mut bad = 0;
        for (text, want) in &cases {
            let got = tk.encode(text, false).unwrap();
            if &got != want {
                bad += 1;
                if bad <= 3 {
                    failures.push(format!(
                        "{name}: {text:?}\n  llama.cpp: {want:?}\n  zoo:       {got:?}"
                    ));
                }
            }
        }
        status.push(format!(
            "{name}: {kind}/{pre}: {} of {} pass",
            cases.len() - bad,
            cases.len()
        ));
    }
    insta::assert_snapshot!("llama_cpp_vocab_status", status.join("\n"));
    assert!(
        failures.is_empty(),
        "a supported tokenizer differs from llama.cpp:\n{}",
        failures.join("\n")
    );
}
