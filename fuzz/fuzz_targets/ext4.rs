#![no_main]
//! Fuzz target: see `lifeboat::fuzz::ext4_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::ext4_reader(data));
