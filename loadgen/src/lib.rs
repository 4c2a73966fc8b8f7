//! Millgate's load generator: client sessions speaking PROTOCOL.md on the
//! `proto` crate, driven by one mio event loop per worker process, with
//! the parent spreading N sessions over workers (under the open-file
//! limit) and source addresses (under the port range), merging their
//! HdrHistograms, and measuring the gateways from /proc.
//!
//! Sans-io parts: [`session`] (one client's state machine), [`wheel`]
//! (timers), [`shard`] (how N is spread), [`stats`] (histograms and their
//! merge). I/O: [`worker`] (the event loop), [`procfs`] (what /proc says).
#![forbid(unsafe_code)]

pub mod procfs;
pub mod session;
pub mod shard;
pub mod stats;
pub mod wheel;
pub mod wire;
pub mod worker;
