//! cargo-fuzz target `gguf_tokenizer`: the body is `zoo_tests::fuzz::gguf_tokenizer::run`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_tests::fuzz::gguf_tokenizer::run(data));
