//! cargo-fuzz target `gguf_header`: the body is `zoo_tests::fuzz::gguf_header::run`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_tests::fuzz::gguf_header::run(data));
