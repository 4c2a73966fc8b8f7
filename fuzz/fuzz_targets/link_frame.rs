//! The link decoder (`proto::link::decode`); see `fuzz_checks::link_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::link_frame::check(data));
