//! The uplink: one thread per gateway process that owns the TCP link to
//! the logic server (`proto::link`).
//!
//! Workers hand it [`Up`] items over one bounded lock-free queue each
//! (crossbeam `ArrayQueue`); it drains every queue, encodes many link frames
//! into one buffer and writes them with one syscall. What the logic server
//! sends back is split by worker (the worker index is the high half of a
//! `SessionRef.conn`) and handed over as [`Down`] items on a queue per
//! worker, followed by one wake of that worker's `mio::Waker`.
//!
//! The queues are doorbells, not channels with a wake per item: a worker
//! rings the uplink's waker only when the uplink said it was going to sleep
//! ([`Doorbell`]), and the uplink wakes each worker at most once per turn.
//!
//! Backpressure: a request that finds the up-queue full is answered
//! UNAVAILABLE by the worker, which keeps reading its clients; session
//! notices wait in the worker until the uplink has made room (the worker
//! sets `want_room`; the uplink wakes it after draining). A full down-queue does not stop the link:
//! what does not fit waits in that worker's own overflow, in order, and
//! the others keep getting theirs. Only when one worker's overflow passes
//! [`DOWN_OVERFLOW_MAX`] bytes (or the undecoded input [`IN_HIGH_WATER`])
//! does the uplink stop reading the link, until that worker catches up:
//! memory stays bounded and nothing is dropped.
//!
//! The link's health ([`crate::liveness`]): a new link sends `Hello` and
//! a `Ping` and is up at the first `Pong`; it is pinged every
//! `ping_interval_ms` and declared dead when nothing has come back for
//! `missed_pongs` intervals. Each request written to it is answered by
//! `request_timeout_ms` at the latest ([`InFlight`]: UNAVAILABLE when the
//! logic server said nothing in time).
//!
//! With several logic nodes (`--logic A,B,C`) the uplink links to one at
//! a time and moves to the next when that link ends ([`Nodes`]); the
//! workers re-announce their sessions there as on any new link.
//!
//! While the logic server is away the uplink dials again with backoff;
//! workers have been told `LinkDown` and answer rule 13's UNAVAILABLE
//! themselves; a client frame still queued when the link fell, or already
//! written to it and never answered, is bounced back so it is answered
//! too. Each time a link is up the workers are told `LinkUp` and
//! re-announce every live session (`Reopen`), and the gateway's readiness
//! gate opens ([`Readiness`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use proto::Frame;
use proto::link::{self, LinkMsg, SessionRef};

use crate::config::Config;
use crate::conn_id::ConnId;
use crate::inflight::{Answer, InFlight};
use crate::liveness::{Backoff, Liveness, Tick};
use crate::metrics::UplinkStats;
use crate::nodes::Nodes;
use crate::readiness::Readiness;

const LINK: Token = Token(0);
const DOORBELL: Token = Token(1);
/// Items taken from one worker's queue per turn.
const BATCH: usize = 4096;
/// Stop draining worker queues while this much output is unwritten.
const OUT_HIGH_WATER: usize = 4 << 20;
/// Stop reading the link while this much input is undecoded.
pub const IN_HIGH_WATER: usize = 4 << 20;
/// Bytes (roughly: frames plus a per-item overhead) one worker's overflow
/// may hold before the uplink stops reading the link for everyone.
pub const DOWN_OVERFLOW_MAX: usize = 4 << 20;
/// Poll timeout while some worker's overflow waits for room.
const RETRY_OVERFLOW: Duration = Duration::from_millis(1);

/// The uplink's settings (from the gateway's [`Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Capacity of each worker's queues (items).
    pub queue: usize,
    pub request_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub missed_pongs: u32,
    /// The start-up grace: dials refused before the first link are
    /// retried quickly for this long.
    pub link_grace_ms: u64,
}

impl UplinkConfig {
    pub fn from_config(cfg: &Config) -> UplinkConfig {
        UplinkConfig {
            queue: cfg.uplink_queue,
            request_timeout_ms: cfg.request_timeout_ms,
            ping_interval_ms: cfg.ping_interval_ms,
            missed_pongs: cfg.missed_pongs,
            link_grace_ms: cfg.link_grace_ms,
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig::from_config(&Config::default())
    }
}

/// Worker to uplink.
#[derive(Debug)]
pub enum Up {
    /// A session logged in at `login_ms` (Unix ms).
    Open {
        session: SessionRef,
        uin: u64,
        device: u32,
        login_ms: u64,
    },
    /// A live session re-announced after a link reconnect.
    Reopen {
        session: SessionRef,
        uin: u64,
        device: u32,
        login_ms: u64,
    },
    /// A session ended.
    Close {
        session: SessionRef,
        uin: u64,
        device: u32,
    },
    /// A client frame for the logic tier, forwarded undecoded.
    Client {
        session: SessionRef,
        uin: u64,
        device: u32,
        frame: Frame,
    },
}

/// Uplink to worker.
#[derive(Debug)]
pub enum Down {
    LinkUp,
    LinkDown,
    /// Write `frame` to each target still live on this worker.
    Deliver {
        targets: Vec<SessionRef>,
        frame: Bytes,
    },
    /// KICK(`reason`) and close.
    Kick {
        session: SessionRef,
        reason: i32,
    },
    /// Write `frame` (an ERROR) and close.
    Terminate {
        session: SessionRef,
        frame: Bytes,
    },
    /// A client frame that never reached the logic tier: answer it as
    /// rule 13 says.
    Bounce {
        session: SessionRef,
        frame: Frame,
    },
}

/// Who this gateway process is on the link (`Hello`): both numbers are
/// drawn from the OS's CSPRNG at start ([`Identity::random`]), so two
/// processes never share them by chance, and a restarted gateway is a new
/// gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub gateway_id: u64,
    pub instance: u64,
}

impl Identity {
    /// A fresh identity from the OS's random source.
    pub fn random() -> Result<Identity, getrandom::Error> {
        Ok(Identity {
            gateway_id: getrandom::u64()?,
            instance: getrandom::u64()?,
        })
    }
}

/// A waker that is rung only while its owner sleeps (the handshake is
/// [`doorbell::Bell`]'s, model-checked with loom).
#[derive(Debug)]
pub struct Doorbell {
    waker: Waker,
    bell: doorbell::Bell,
}

impl Doorbell {
    /// Call after publishing work for the uplink.
    pub fn ring(&self) {
        if self.bell.ring() {
            let _ = self.waker.wake();
        }
    }
}

/// A worker's end of the uplink.
#[derive(Debug, Clone)]
pub struct WorkerPort {
    up: Arc<ArrayQueue<Up>>,
    down: Arc<ArrayQueue<Down>>,
    doorbell: Arc<Doorbell>,
    want_room: Arc<AtomicBool>,
}

impl WorkerPort {
    /// Queues `item` for the uplink, or gives it back when the queue is
    /// full (the caller answers a request UNAVAILABLE, or keeps a session
    /// notice until there is room: see `want_room`).
    pub fn push(&self, item: Up) -> Result<(), Up> {
        let r = self.up.push(item);
        if r.is_err() {
            self.want_room.store(true, Ordering::Release);
        }
        self.doorbell.ring();
        r
    }

    /// The next item from the uplink.
    pub fn pop(&self) -> Option<Down> {
        self.down.pop()
    }
}

/// The uplink's view of one worker.
#[derive(Debug)]
struct WorkerSide {
    up: Arc<ArrayQueue<Up>>,
    down: Arc<ArrayQueue<Down>>,
    waker: Arc<Waker>,
    want_room: Arc<AtomicBool>,
    /// Items that did not fit in `down`, in order, and their cost.
    overflow: VecDeque<Down>,
    overflow_bytes: usize,
    wake: bool,
}

impl WorkerSide {
    /// This worker is so far behind that the link must wait for it.
    fn overflow_full(&self) -> bool {
        self.overflow_bytes >= DOWN_OVERFLOW_MAX
    }
}

/// What an item costs in a worker's overflow (bytes, roughly).
fn cost(item: &Down) -> usize {
    const ITEM: usize = 64;
    ITEM + match item {
        Down::Deliver { targets, frame } => frame.len() + 16 * targets.len(),
        Down::Terminate { frame, .. } => frame.len(),
        Down::Bounce { frame, .. } => frame.body.len(),
        Down::LinkUp | Down::LinkDown | Down::Kick { .. } => 0,
    }
}

/// The uplink thread's state.
#[derive(Debug)]
pub struct Uplink {
    /// The logic nodes, and which one is dialled or linked.
    nodes: Nodes,
    identity: Identity,
    poll: Poll,
    doorbell: Arc<Doorbell>,
    workers: Vec<WorkerSide>,
    link: Option<TcpStream>,
    /// The link is up: its first `Pong` came back.
    up: bool,
    /// The link may have input not read yet (readiness is edge-triggered).
    readable: bool,
    out: BytesMut,
    inbuf: BytesMut,
    stats: Arc<UplinkStats>,
    ready: Arc<Readiness>,
    /// Requests written to this link and not yet answered.
    inflight: InFlight,
    liveness: Liveness,
    clock: Instant,
    /// Scratch for requests past their deadline.
    expired: Vec<(SessionRef, Frame)>,
}

impl Uplink {
    /// Builds the uplink to the logic nodes `addrs` (at least one; see
    /// `nodes.rs`) and one port per worker. `wakers[i]` is worker `i`'s
    /// waker; `queue` is the capacity of each queue.
    pub fn new(
        addrs: Vec<SocketAddr>,
        identity: Identity,
        wakers: &[Arc<Waker>],
        cfg: UplinkConfig,
    ) -> io::Result<(Uplink, Vec<WorkerPort>)> {
        let queue = cfg.queue;
        let poll = Poll::new()?;
        let doorbell = Arc::new(Doorbell {
            waker: Waker::new(poll.registry(), DOORBELL)?,
            bell: doorbell::Bell::new(),
        });
        let mut sides = Vec::new();
        let mut ports = Vec::new();
        for waker in wakers {
            let up = Arc::new(ArrayQueue::new(queue.max(1)));
            let down = Arc::new(ArrayQueue::new(queue.max(1)));
            let want_room = Arc::new(AtomicBool::new(false));
            ports.push(WorkerPort {
                up: up.clone(),
                down: down.clone(),
                doorbell: doorbell.clone(),
                want_room: want_room.clone(),
            });
            sides.push(WorkerSide {
                up,
                down,
                waker: waker.clone(),
                want_room,
                overflow: VecDeque::new(),
                overflow_bytes: 0,
                wake: false,
            });
        }
        let nodes = Nodes::new(addrs, identity.gateway_id, Backoff::new(cfg.link_grace_ms));
        let uplink = Uplink {
            nodes,
            identity,
            poll,
            doorbell,
            workers: sides,
            link: None,
            up: false,
            readable: false,
            out: BytesMut::with_capacity(64 * 1024),
            inbuf: BytesMut::with_capacity(64 * 1024),
            stats: Arc::default(),
            ready: Arc::default(),
            inflight: InFlight::new(cfg.request_timeout_ms),
            liveness: Liveness::new(cfg.ping_interval_ms, cfg.missed_pongs),
            clock: Instant::now(),
            expired: Vec::new(),
        };
        Ok((uplink, ports))
    }

    /// The uplink's counters and link state (for metrics).
    pub fn stats(&self) -> Arc<UplinkStats> {
        self.stats.clone()
    }

    /// The gate that opens when the first link is up.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.ready.clone()
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Runs for the life of the process: dial, serve the link, wait, dial
    /// again.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let node = self.nodes.current();
            let wait = match self.connect(node) {
                Ok(()) => {
                    tracing::info!(logic = %node, "uplink connected, waiting for its pong");
                    if let Err(e) = self.serve(&mut events) {
                        tracing::warn!(logic = %node, "uplink lost: {e}");
                    }
                    let up_since = self.liveness.up_since();
                    self.link_down();
                    self.nodes.link_ended(self.now_ms(), up_since)
                }
                Err(e) => {
                    tracing::debug!(logic = %node, "uplink connect: {e}");
                    self.nodes.dial_failed(self.now_ms())
                }
            };
            self.pause(&mut events, wait);
        }
    }

    /// Waits `ms` with no link, answering what workers still queue.
    fn pause(&mut self, events: &mut Events, ms: u64) {
        let until = self.now_ms().saturating_add(ms);
        loop {
            self.bounce_queued();
            self.retry_overflow();
            self.wake_workers();
            let now = self.now_ms();
            if now >= until {
                return;
            }
            let mut timeout = Duration::from_millis(until - now);
            if self.workers.iter().any(|w| !w.overflow.is_empty()) {
                timeout = timeout.min(RETRY_OVERFLOW);
            }
            let workers = &self.workers;
            if self
                .doorbell
                .bell
                .may_sleep(|| workers.iter().any(|w| !w.up.is_empty()))
            {
                let _ = self.poll.poll(events, Some(timeout));
                self.doorbell.bell.awake();
            }
        }
    }

    fn connect(&mut self, node: SocketAddr) -> io::Result<()> {
        let std = std::net::TcpStream::connect_timeout(&node, Duration::from_secs(1))?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std);
        self.poll.registry().register(
            &mut stream,
            LINK,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.out.clear();
        self.inbuf.clear();
        link::encode_hello(
            &mut self.out,
            self.identity.gateway_id,
            self.identity.instance,
        );
        // Up at its Pong: the server has read the Hello and answers.
        let nonce = self.liveness.connected(self.now_ms());
        link::encode_ping(&mut self.out, nonce);
        self.link = Some(stream);
        self.readable = true;
        Ok(())
    }

    /// The first `Pong` of this link came back.
    fn link_up(&mut self) {
        self.up = true;
        self.stats.connected.store(true, Ordering::Release);
        tracing::info!(logic = %self.nodes.current(), "uplink up");
        for i in 0..self.workers.len() {
            self.send_down(i, Down::LinkUp);
        }
        // After the LinkUps are queued: a worker starting at the gate finds
        // its LinkUp before its first client.
        self.ready.open();
    }

    fn link_down(&mut self) {
        if let Some(mut s) = self.link.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        self.stats.connected.store(false, Ordering::Release);
        if std::mem::take(&mut self.up) {
            for i in 0..self.workers.len() {
                self.send_down(i, Down::LinkDown);
            }
        }
        // Written but never answered: the oldest requests, answered first.
        for (session, frame) in self.inflight.take_all() {
            self.send_down(ConnId::worker_of(session), Down::Bounce { session, frame });
        }
        self.bounce_queued();
    }

    /// With no link up: drops announcements and bounces client frames back
    /// to their workers so every request gets its rule-13 answer.
    fn bounce_queued(&mut self) {
        for i in 0..self.workers.len() {
            while let Some(item) = self.workers[i].up.pop() {
                if let Up::Client { session, frame, .. } = item {
                    self.send_down(i, Down::Bounce { session, frame });
                }
            }
            let side = &mut self.workers[i];
            if side.want_room.swap(false, Ordering::AcqRel) {
                side.wake = true;
            }
        }
        self.wake_workers();
    }

    fn serve(&mut self, events: &mut Events) -> io::Result<()> {
        let mut writable = false;
        loop {
            self.retry_overflow();
            // Read the link unless a worker is too far behind (or the
            // input already buffered is at its bound).
            if !self.link_stuck() && (self.readable || !self.inbuf.is_empty()) {
                self.read_link()?;
            }
            let now = self.now_ms();
            match self.liveness.tick(now) {
                Tick::Quiet => {}
                Tick::Ping(nonce) => link::encode_ping(&mut self.out, nonce),
                Tick::Dead => {
                    self.stats.links_dead.fetch_add(1, Ordering::Relaxed);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nothing heard from the logic server (missed pongs)",
                    ));
                }
            }
            self.expire(now);
            if self.up {
                self.drain_workers();
            } else {
                self.bounce_queued();
            }
            if writable || !self.out.is_empty() {
                writable = self.write_link()?;
            }
            self.wake_workers();

            // Sleep until something can be done: a worker's ring (only if
            // the queues can be drained now), the link's readiness, the next
            // ping, dead-link check or request deadline, or the overflow
            // retry.
            let now = self.now_ms();
            let mut due = self.liveness.next_due();
            if let Some(d) = self.inflight.next_due() {
                due = due.min(d);
            }
            let mut timeout = Duration::from_millis(due.saturating_sub(now));
            if self.workers.iter().any(|w| !w.overflow.is_empty()) {
                timeout = timeout.min(RETRY_OVERFLOW);
            }
            let can_read = !self.link_stuck() && (self.readable || !self.inbuf.is_empty());
            let can_write = writable && !self.out.is_empty();
            if can_read || can_write {
                timeout = Duration::ZERO;
            }
            let drainable = self.out.len() < OUT_HIGH_WATER;
            let workers = &self.workers;
            let sleep = timeout.is_zero()
                || !drainable
                || self
                    .doorbell
                    .bell
                    .may_sleep(|| workers.iter().any(|w| !w.up.is_empty()));
            if !sleep {
                timeout = Duration::ZERO;
            }
            match self.poll.poll(events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.doorbell.bell.awake();
            for ev in events.iter() {
                if ev.token() == LINK {
                    self.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    writable |= ev.is_writable();
                }
            }
        }
    }

    /// Some worker's overflow is full, or the undecoded input is: the link
    /// is not read until that clears.
    fn link_stuck(&self) -> bool {
        self.inbuf.len() >= IN_HIGH_WATER || self.workers.iter().any(WorkerSide::overflow_full)
    }

    /// Answers UNAVAILABLE every request written to the link whose
    /// deadline has passed.
    fn expire(&mut self, now: u64) {
        let mut due = std::mem::take(&mut self.expired);
        self.inflight.expire(now, &mut due);
        self.stats
            .requests_expired
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        for (session, frame) in due.drain(..) {
            self.send_down(ConnId::worker_of(session), Down::Bounce { session, frame });
        }
        self.expired = due;
    }

    fn drain_workers(&mut self) {
        let now = self.now_ms();
        for side in &mut self.workers {
            if self.out.len() >= OUT_HIGH_WATER {
                break;
            }
            for _ in 0..BATCH {
                let Some(item) = side.up.pop() else { break };
                match item {
                    Up::Open {
                        session,
                        uin,
                        device,
                        login_ms,
                    } => link::encode_open(&mut self.out, session, uin, device, login_ms),
                    Up::Reopen {
                        session,
                        uin,
                        device,
                        login_ms,
                    } => link::encode_reopen(&mut self.out, session, uin, device, login_ms),
                    Up::Close {
                        session,
                        uin,
                        device,
                    } => link::encode_close(&mut self.out, session, uin, device),
                    Up::Client {
                        session,
                        uin,
                        device,
                        frame,
                    } => {
                        let wire = self.inflight.written(session, frame, now);
                        link::encode_client_frame(&mut self.out, session, uin, device, &wire);
                    }
                }
            }
            if side.want_room.swap(false, Ordering::AcqRel) {
                side.wake = true;
            }
        }
    }

    /// Writes what it can; returns whether the socket may take more.
    fn write_link(&mut self) -> io::Result<bool> {
        let Some(stream) = self.link.as_mut() else {
            return Ok(false);
        };
        while !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _ = self.out.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn read_link(&mut self) -> io::Result<()> {
        let Some(stream) = self.link.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 64 * 1024];
        while self.readable && self.inbuf.len() < IN_HIGH_WATER {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    // A short read emptied the socket; the next bytes bring
                    // a new (edge-triggered) event.
                    if n < chunk.len() {
                        self.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let now = self.now_ms();
        while !self.workers.iter().any(WorkerSide::overflow_full) {
            let msg = link::decode(&mut self.inbuf, link::DEFAULT_MAX_LINK_FRAME)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let Some(msg) = msg else { break };
            if self
                .liveness
                .heard(now, matches!(msg, LinkMsg::Pong { .. }))
            {
                self.link_up();
            }
            self.dispatch(msg);
        }
        Ok(())
    }

    fn dispatch(&mut self, msg: LinkMsg) {
        match msg {
            LinkMsg::Deliver { targets, frame } => {
                let frame = match targets[..] {
                    [one] => match self.inflight.answered(one, frame) {
                        Answer::Pass(f) => f,
                        Answer::Late(_) => {
                            // Answered UNAVAILABLE at its deadline already.
                            self.stats.late_answers.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                    _ => frame,
                };
                if self.workers.len() == 1 {
                    self.send_down(0, Down::Deliver { targets, frame });
                    return;
                }
                let mut by_worker: Vec<Vec<SessionRef>> = vec![Vec::new(); self.workers.len()];
                for t in targets {
                    if let Some(v) = by_worker.get_mut(ConnId::worker_of(t)) {
                        v.push(t);
                    }
                }
                for (i, targets) in by_worker.into_iter().enumerate() {
                    if !targets.is_empty() {
                        let frame = frame.clone();
                        self.send_down(i, Down::Deliver { targets, frame });
                    }
                }
            }
            LinkMsg::Kick { session, reason } => {
                self.send_down(ConnId::worker_of(session), Down::Kick { session, reason })
            }
            LinkMsg::Terminate { session, frame } => {
                // Closes the session even when its request has expired.
                let (Answer::Pass(frame) | Answer::Late(frame)) =
                    self.inflight.answered(session, frame);
                self.send_down(
                    ConnId::worker_of(session),
                    Down::Terminate { session, frame },
                );
            }
            LinkMsg::Ping { nonce } => link::encode_pong(&mut self.out, nonce),
            LinkMsg::Pong { .. } => {}
            other => tracing::debug!("uplink ignores {:?}", other.kind()),
        }
    }

    fn send_down(&mut self, worker: usize, item: Down) {
        let Some(side) = self.workers.get_mut(worker) else {
            return;
        };
        side.wake = true;
        if !side.overflow.is_empty() {
            side.overflow_bytes += cost(&item);
            side.overflow.push_back(item);
        } else if let Err(item) = side.down.push(item) {
            side.overflow_bytes += cost(&item);
            side.overflow.push_back(item);
        }
    }

    fn retry_overflow(&mut self) {
        for side in &mut self.workers {
            while let Some(item) = side.overflow.pop_front() {
                let c = cost(&item);
                if let Err(item) = side.down.push(item) {
                    side.overflow.push_front(item);
                    break;
                }
                side.overflow_bytes -= c;
                side.wake = true;
            }
        }
    }

    fn wake_workers(&mut self) {
        for side in &mut self.workers {
            if std::mem::take(&mut side.wake) {
                let _ = side.waker.wake();
            }
        }
    }
}
