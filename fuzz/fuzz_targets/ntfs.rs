#![no_main]
//! Fuzz target: see `lifeboat::fuzz::ntfs_reader`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::ntfs_reader(data));
