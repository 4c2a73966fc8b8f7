//! Millgate's load generator: client sessions speaking PROTOCOL.md on the
//! `proto` crate, driven by one mio event loop per worker process, with
//! the parent spreading N sessions over workers (under the open-file
//! limit) and source addresses (under the port range), merging their
//! HdrHistograms, and measuring the gateways from /proc.
//!
//! Sans-io parts: [`session`] (one client's state machine), [`wheel`]
//! (timers), [`shard`] (how N is spread), [`chat`] (who talks to whom and
//! how arrivals are classified), [`stats`] (histograms and their
//! merge), [`report`]. I/O: [`worker`] (the event loop of one worker
//! process), [`fleet`] (the parent's handle on its workers), [`run`] (one
//! load run), [`c1m`] (the one-command run), [`procfs`], [`chart`].
#![forbid(unsafe_code)]

pub mod c1m;
pub mod chart;
pub mod chat;
pub mod fleet;
pub mod procfs;
pub mod report;
pub mod run;
pub mod session;
pub mod shard;
pub mod stats;
pub mod wheel;
pub mod wire;
pub mod worker;

use std::path::Path;

/// Reads a token secret file: its bytes, one trailing newline removed
/// (the gateway's `--secret-file` rule).
pub fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut b = std::fs::read(path)?;
    if b.last() == Some(&b'\n') {
        b.pop();
    }
    Ok(b)
}
