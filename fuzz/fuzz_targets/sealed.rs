#![no_main]
//! Fuzz target: see `lifeboat::fuzz::sealed`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::sealed(data));
