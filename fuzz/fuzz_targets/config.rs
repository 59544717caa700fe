#![no_main]
//! Fuzz target: see `lifeboat::fuzz::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::config(data));
