#![no_main]
//! Fuzz target: see `lifeboat::fuzz::swap_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::swap_reader(data));
