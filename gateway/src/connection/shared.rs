//! What every connection of one worker shares: the settings, the rate-limit
//! table, the link's state and the queue of notices waiting for room
//! towards the uplink, and the outputs of the connection handled last
//! (staged here, not in the connection, which must stay small: see
//! `crate::conn`).
//!
//! Staged outputs belong to one connection at a time: after every
//! `Connection::handle_*` call the driver polls them
//! ([`Shared::poll_timeout`], [`Shared::poll_interest`],
//! [`Shared::poll_shutdown`], [`Shared::poll_close`]) before it hands the
//! next connection anything (debug builds check this).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;

use crate::conn_id::ConnId;
use crate::metrics::WorkerStats;
use crate::ratelimit;
use crate::session::{Now, SessionConfig};
use crate::uplink::{Up, WorkerPort};

/// How often expired entries leave the rate-limit table.
const RATE_SWEEP_MS: u64 = 1_000;

/// The connection policy's settings (from the worker's).
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// This worker's index (the high half of its `SessionRef`s).
    pub worker: usize,
    /// Workers in this process (drain interleaves their GOAWAY delays).
    pub workers: usize,
    pub session: SessionConfig,
    /// The largest body a client may be sent (PROTOCOL.md).
    pub max_body: usize,
    /// Output queued for one session beyond which it is a slow consumer.
    pub write_budget: usize,
    /// Connections one worker holds at most; more are refused at accept.
    pub max_connections: usize,
    /// The drain window (rule 12).
    pub drain_ms: u64,
}

/// Where a worker's [`Up`] items go: the uplink's bounded queue, or, in
/// tests and the fuzz target, a model of it. `Err` gives the item back
/// when there is no room.
pub trait UpSink {
    fn push(&mut self, item: Up) -> Result<(), Up>;
}

/// No logic server configured: notices and requests go nowhere (requests
/// are never forwarded then: the link is never up).
impl UpSink for Option<WorkerPort> {
    fn push(&mut self, item: Up) -> Result<(), Up> {
        match self {
            Some(port) => port.push(item),
            None => Ok(()),
        }
    }
}

/// Outputs of the connection handled last, until the driver polls them.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Whose outputs these are (debug builds check they are polled).
    pub(super) id: Option<ConnId>,
    /// Arm the connection's timer at this time (monotonic ms).
    pub(super) timer: Option<u64>,
    /// Register for writable (true) or readable only (false).
    pub(super) interest: Option<bool>,
    /// Shut the write side once nothing is queued.
    pub(super) shutdown: bool,
    /// The connection is over: free the slot.
    pub(super) close: bool,
}

/// Everything one worker's connections share (see the module doc).
#[derive(Debug)]
pub struct Shared<U> {
    pub cfg: ConnConfig,
    /// Rate-limit buckets kept outside the sessions, shared by every
    /// worker of the process (`ratelimit::Shared`).
    pub buckets: Arc<ratelimit::Shared>,
    pub stats: Arc<WorkerStats>,
    pub(super) up: U,
    /// The logic server is reachable (as the uplink last said).
    pub(super) link_up: bool,
    /// Session notices the full up-queue did not take, in order; while
    /// any wait, requests are answered UNAVAILABLE.
    pub(super) stalled: VecDeque<Up>,
    pub(super) next_epoch: u32,
    next_sweep_ms: u64,
    /// New output of the connection handled last, not yet written.
    pub(super) tx: BytesMut,
    /// Bytes at the front of `tx` that end a frame already partly written.
    pub(super) tx_head: usize,
    pub(super) staged: Staged,
}

impl<U: UpSink> Shared<U> {
    pub fn new(
        cfg: ConnConfig,
        stats: Arc<WorkerStats>,
        buckets: Arc<ratelimit::Shared>,
        up: U,
        now: Now,
    ) -> Shared<U> {
        Shared {
            cfg,
            buckets,
            stats,
            up,
            link_up: false,
            stalled: VecDeque::new(),
            next_epoch: 0,
            next_sweep_ms: now.mono_ms + RATE_SWEEP_MS,
            tx: BytesMut::with_capacity(64 * 1024),
            tx_head: 0,
            staged: Staged::default(),
        }
    }

    /// The up-sink (the driver pops the uplink's answers through it).
    pub fn sink(&self) -> &U {
        &self.up
    }

    /// The logic server is reachable (as the uplink last said).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Whether one more connection may be accepted while `open` are.
    pub fn may_accept(&self, open: usize) -> bool {
        open < self.cfg.max_connections
    }

    /// Once per loop turn: waiting notices move into the up-queue as room
    /// allows, and expired rate-limit entries are swept.
    pub fn handle_turn(&mut self, now: Now) {
        while let Some(item) = self.stalled.pop_front() {
            if let Err(item) = self.up.push(item) {
                self.stalled.push_front(item);
                break;
            }
        }
        if now.mono_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now.mono_ms + RATE_SWEEP_MS;
            self.buckets.sweep(
                &self.cfg.session.rate,
                now.mono_ms as u32,
                self.cfg.worker,
                self.cfg.workers,
            );
        }
    }

    /// The uplink has a link: requests are forwarded from now on (each
    /// live connection then re-announces itself: `handle_link_up`).
    pub fn handle_link_up(&mut self) {
        self.link_up = true;
    }

    /// The link fell: announcements for it are void (the next link up
    /// re-announces every live session).
    pub fn handle_link_down(&mut self) {
        self.link_up = false;
        self.stalled.clear();
    }

    /// Queues `item` for the uplink. A session notice that does not fit
    /// waits in `stalled`, in order; a client request that does not fit
    /// (or would overtake a waiting notice) is given back, to be answered
    /// UNAVAILABLE.
    pub(super) fn send_up(&mut self, item: Up) -> Result<(), Up> {
        let request = matches!(item, Up::Client { .. });
        if !self.stalled.is_empty() {
            if request {
                return Err(item);
            }
            self.stalled.push_back(item);
            return Ok(());
        }
        match self.up.push(item) {
            Ok(()) => Ok(()),
            Err(item) if request => Err(item),
            Err(item) => {
                self.stalled.push_back(item);
                Ok(())
            }
        }
    }

    /// Starts staging outputs for `id`.
    pub(super) fn begin(&mut self, id: ConnId) {
        if cfg!(debug_assertions) {
            let s = &self.staged;
            let idle = s.timer.is_none() && s.interest.is_none() && !s.shutdown && !s.close;
            assert!(
                s.id == Some(id) || (idle && self.tx.is_empty()),
                "outputs of {:?} not polled before input for {id:?}",
                s.id
            );
        }
        self.staged.id = Some(id);
    }

    /// When to fire the timer of the connection handled last, if it moved.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<u64> {
        self.staged.timer.take()
    }

    /// The socket interest it needs now, if that changed: `true` for
    /// readable and writable (output is queued), `false` for readable.
    #[must_use]
    pub fn poll_interest(&mut self) -> Option<bool> {
        self.staged.interest.take()
    }

    /// True once: shut the socket's write side (the connection is closing
    /// and all its output is written).
    #[must_use]
    pub fn poll_shutdown(&mut self) -> bool {
        std::mem::take(&mut self.staged.shutdown)
    }

    /// True once: the connection is over; free its slot.
    #[must_use]
    pub fn poll_close(&mut self) -> bool {
        std::mem::take(&mut self.staged.close)
    }
}
