//! Stored payment-intent records and their transactions, as start-up reads them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pstored::fuzz::payment_intent(data));
