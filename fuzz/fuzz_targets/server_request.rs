//! cargo-fuzz target `server_request`: the body is `zoo_tests::fuzz::server_request::run`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_tests::fuzz::server_request::run(data));
