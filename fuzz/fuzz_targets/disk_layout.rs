#![no_main]
//! Fuzz target: see `lifeboat::fuzz::disk_layout`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::disk_layout(data));
