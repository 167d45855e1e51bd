//! cargo-fuzz target `safetensors_header`: the body is `zoo_tests::fuzz::safetensors_header::run`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_tests::fuzz::safetensors_header::run(data));
