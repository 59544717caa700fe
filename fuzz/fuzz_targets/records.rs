#![no_main]
//! Fuzz target: see `lifeboat::fuzz::records`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::records(data));
