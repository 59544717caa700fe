#![no_main]
//! Fuzz target: see `lifeboat::fuzz::lvm_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::lvm_reader(data));
