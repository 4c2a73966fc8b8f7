//! The client frame decoder (`proto::decode`); see `fuzz_checks::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::client_frame::check(data));
