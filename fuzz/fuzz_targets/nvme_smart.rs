#![no_main]
//! Fuzz target: see `lifeboat::fuzz::nvme_smart`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::nvme_smart(data));
