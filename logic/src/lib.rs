//! Millgate's logic tier, behind the gateways.
//!
//! (Design notes are filled in below.)

pub mod channel;
pub mod config;
pub mod dedup;
pub mod metrics;
pub mod net;
pub mod reply;
pub mod router;
pub mod server;
pub mod shard;
pub mod worker;
