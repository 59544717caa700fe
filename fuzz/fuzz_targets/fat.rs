#![no_main]
//! Fuzz target: see `lifeboat::fuzz::fat_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::fat_reader(data));
