#![no_main]
//! Fuzz target: see `lifeboat::fuzz::http_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::http_request(data));
