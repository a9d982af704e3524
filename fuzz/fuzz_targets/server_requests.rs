//! The reference server's request parsing after a fixed handshake; see
//! `nbd_conform_fuzz::server_side::run_requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd_conform_fuzz::server_side::run_requests(data));
