//! Control-protocol messages (requests a provider reads, answers a client reads).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::control(data));
