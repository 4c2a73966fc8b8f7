//! Millgate's benchmarks and the yardstick they are held against.
//!
//! - `benches/*.rs`: criterion micro-benchmarks of the hot parts (codec,
//!   timers, queues, token check), each beside the usual alternative.
//! - [`baseline`]: a deliberately ordinary tokio server for the session part
//!   of PROTOCOL.md (one task per connection, tokio-util's length-delimited
//!   codec, `tokio::time::timeout` for expiry), run by the `baseline`
//!   binary and compared with the gateway by `compare-idle`. It is never
//!   shipped.
//!
//! Figures and the commands that produce them are in `benches/README.md`.
#![forbid(unsafe_code)]

pub mod baseline;
