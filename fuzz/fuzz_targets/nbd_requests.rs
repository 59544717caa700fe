#![no_main]
//! Fuzz target: see `lifeboat::fuzz::nbd_requests`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lifeboat::fuzz::nbd_requests(data));
