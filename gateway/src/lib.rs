//! Millgate gateway: thread-per-core mio event loops that hold idle IM
//! sessions cheaply (PROTOCOL.md), expire them on a per-thread timer wheel,
//! and forward their traffic to the logic tier.
//!
//! Sans-io parts: [`session`] (the per-client state machine), [`wheel`]
//! (the timer wheel), [`heartbeat`], [`ratelimit`], [`inflight`] and [`liveness`]. The I/O parts only
//! move bytes: [`worker`] (one event loop per thread), [`uplink`] (the link
//! to the logic server), [`server`] (threads, signals, lifecycle),
//! [`metrics`].
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod conn;
pub mod conn_id;
pub mod connection;
pub mod doctor;
pub mod heartbeat;
pub mod inflight;
pub mod liveness;
pub mod metrics;
pub mod nodes;
pub mod ratelimit;
pub mod readiness;
pub mod server;
pub mod session;
mod sys;
pub mod tls;
pub mod uplink;
pub mod wheel;
pub mod worker;
pub mod ws;
