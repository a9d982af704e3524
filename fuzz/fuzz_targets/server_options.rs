//! The reference server's option phase against fuzzed client bytes; see
//! `nbd_conform_fuzz::server_side::run_options`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd_conform_fuzz::server_side::run_options(data));
