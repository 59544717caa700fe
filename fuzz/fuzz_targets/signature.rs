#![no_main]
//! Fuzz target: see `lifeboat::fuzz::signature`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::signature(data));
