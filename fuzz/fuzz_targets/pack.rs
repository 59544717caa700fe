#![no_main]
//! Fuzz target: see `lifeboat::fuzz::pack`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::pack(data));
