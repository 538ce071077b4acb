//! Shard-protocol messages, both ways.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::shard(data));
