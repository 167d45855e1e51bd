//! cargo-fuzz target `chat_template`: the body is `zoo_tests::fuzz::chat_template::run`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_tests::fuzz::chat_template::run(data));
