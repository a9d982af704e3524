//! The client against a server repeating a sequence of messages forever; see
//! `nbd_conform_fuzz::client_sequence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd_conform_fuzz::client_sequence::run(data));
