#![no_main]
//! Fuzz target: see `lifeboat::fuzz::btrfs_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::btrfs_reader(data));
