//! Stored contract records, either side.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::contract(data));
