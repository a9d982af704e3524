//! The real client session against a fuzzed server stream; see `nbd_conform_fuzz::client_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd_conform_fuzz::client_stream::run(data));
