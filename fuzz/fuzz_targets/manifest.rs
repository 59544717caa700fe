#![no_main]
//! Fuzz target: see `lifeboat::fuzz::manifest`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::manifest(data));
