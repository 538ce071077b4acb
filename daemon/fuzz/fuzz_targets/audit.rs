//! Audit answers from a hostile provider, judged against a known shard: a forged proof that passes is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::audit(data));
