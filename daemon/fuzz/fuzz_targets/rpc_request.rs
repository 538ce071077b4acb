//! JSON-RPC request bodies through jsonrpsee and the daemon's parameter checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::rpc_request(data));
