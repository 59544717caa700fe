#![no_main]
//! Fuzz target: see `lifeboat::fuzz::rescue_cmdline`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::rescue_cmdline(data));
