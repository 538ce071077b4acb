//! Stored manifest records, decoded and validated as the client reads them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::manifest(data));
