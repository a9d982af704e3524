//! Every client-side decoder on arbitrary bytes; see `nbd_conform_fuzz::decoders`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd_conform_fuzz::decoders::run(data));
