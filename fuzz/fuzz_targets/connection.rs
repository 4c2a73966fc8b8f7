//! The gateway's connection policy (`gateway::connection`) on a virtual
//! clock; see `fuzz_checks::connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::connection::check(data));
