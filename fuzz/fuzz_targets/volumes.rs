#![no_main]
//! Fuzz target: see `lifeboat::fuzz::volumes`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::volumes(data));
