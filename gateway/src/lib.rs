//! Millgate gateway: thread-per-core mio event loops that hold idle IM
//! sessions cheaply (PROTOCOL.md), expire them on a per-thread timer wheel,
//! and forward their traffic to the logic tier.
//!
//! Sans-io parts: [`session`] (the per-client state machine), [`wheel`]
//! (the timer wheel), [`heartbeat`] and [`ratelimit`]. The I/O parts only
//! move bytes: [`worker`] (one event loop per thread), [`server`] (threads,
//! signals, lifecycle), [`metrics`].
#![deny(unsafe_code)]

pub mod heartbeat;
pub mod ratelimit;
pub mod session;
pub mod wheel;
