#![no_main]
//! Fuzz target: see `lifeboat::fuzz::driver_index`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::driver_index(data));
