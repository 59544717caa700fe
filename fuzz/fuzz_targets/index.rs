#![no_main]
//! Fuzz target: see `lifeboat::fuzz::index`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::index(data));
