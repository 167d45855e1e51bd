//! cargo-fuzz target `config_json`: the body is `zoo_tests::fuzz::config_json::run`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_tests::fuzz::config_json::run(data));
