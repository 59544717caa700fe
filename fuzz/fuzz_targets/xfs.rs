#![no_main]
//! Fuzz target: see `lifeboat::fuzz::xfs_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::xfs_reader(data));
