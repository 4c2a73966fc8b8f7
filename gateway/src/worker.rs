//! One worker thread's event loop: its own mio `Poll`, SO_REUSEPORT
//! listener, connection slab and timer wheel. Nothing here is shared with
//! another worker; the only cross-thread inputs are the control word (drain
//! or stop, with a `Waker`) and, with a logic server, the uplink queues.
//!
//! The loop only moves bytes: reads go into one per-thread buffer and are
//! cut into frames by `proto::decode`; each frame goes to the connection's
//! [`Session`], whose replies land in one per-thread output buffer that is
//! written straight to the socket. A connection gets buffers of its own
//! only while a frame is incomplete or the socket would block.
//!
//! Readiness is edge-triggered: reads and accepts are drained until
//! `WouldBlock` (`Interrupted` is retried); a connection that still has
//! input after `MAX_READS` reads is revisited on the next turn so that one
//! busy client cannot starve the rest; events for removed slots are
//! ignored.
//!
//! Nothing the logic tier or one client does stops the worker reading its
//! other clients (rule 13): a request that does not fit in the full queue
//! to the uplink is answered UNAVAILABLE at once, like one sent while the
//! link is down. Only session notices (Open, Reopen, Close) wait, in order,
//! for room; while any wait, requests are answered UNAVAILABLE too, so none
//! overtakes its session's Open.
//!
//! At the open-file limit (EMFILE/ENFILE) the worker retries `accept` on
//! every loop turn (at least every [`EMFILE_RETRY_MS`], and right after each
//! close), so pending connections are taken as soon as a descriptor frees
//! up; one that has waited `emfile_grace_ms` is refused with the spare
//! descriptor: it is closed, the connection accepted and closed, the spare
//! reopened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use proto::Frame;
use slab::Slab;

use crate::conn::{Conn, SlabLinks};
use crate::metrics::WorkerStats;
use crate::ratelimit;
use crate::session::{
    CloseReason, LoginFailure, Now, Outcome, Session, SessionConfig, State, TimerOutcome,
};
use crate::uplink::{self, Up, WorkerPort};
use crate::wheel::Wheel;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Reads per connection per turn before yielding to the others.
const MAX_READS: usize = 16;
/// Free space kept at the end of the per-thread read buffer.
const READ_SPARE: usize = 16 * 1024;
/// Initial size of the per-thread read buffer.
const READ_BUF: usize = 64 * 1024;
/// Extra time a draining worker allows for lingering closes.
const DRAIN_GRACE: Duration = Duration::from_secs(3);
/// While at the open-file limit, the longest a worker sleeps before it
/// retries `accept` (descriptors freed by other workers raise no event).
const EMFILE_RETRY_MS: u64 = 10;
/// How often expired entries leave the rate-limit table.
const RATE_SWEEP_MS: u64 = 1_000;

/// What the process asks of its workers (written by the signal thread).
pub const RUN: u8 = 0;
pub const DRAIN: u8 = 1;
pub const STOP: u8 = 2;

/// Settings a worker needs beyond the session's.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub index: usize,
    /// Workers in this process (drain spreads GOAWAYs across all of them).
    pub workers: usize,
    pub session: SessionConfig,
    pub max_body: usize,
    pub tick_ms: u64,
    pub wheel_slots: usize,
    pub max_connections: usize,
    pub drain_ms: u64,
    /// Output queued for one session beyond which it is a slow consumer.
    pub write_budget: usize,
    /// The base of every worker's monotonic clock: one instant for the
    /// process, so times in the shared rate-limit table agree.
    pub epoch: Instant,
    /// At the open-file limit, how long a pending connection may wait for
    /// a descriptor before it is refused.
    pub emfile_grace_ms: u64,
}

/// Monotonic and wall clock readings, taken once per loop turn.
#[derive(Debug)]
struct Clock {
    base: Instant,
}

impl Clock {
    fn now(&self) -> Now {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now {
            mono_ms: self.base.elapsed().as_millis() as u64,
            unix_ms,
        }
    }
}

/// Sessions a draining worker closes, paced: (close at ms, key, epoch).
type DrainQueue = VecDeque<(u64, usize, u32)>;

/// A worker's event loop and everything it owns.
#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    wheel: Wheel,
    rx: BytesMut,
    tx: BytesMut,
    fired: Vec<u32>,
    pending: Vec<usize>,
    clock: Clock,
    now: Now,
    next_epoch: u32,
    stats: Arc<WorkerStats>,
    control: Arc<AtomicU8>,
    drain: Option<(DrainQueue, u64)>,
    /// The uplink, when a logic server is configured.
    port: Option<WorkerPort>,
    /// The logic server is reachable (as the uplink last said).
    backend_up: bool,
    /// Session notices the full up-queue did not take, in order; while
    /// any wait, requests are answered UNAVAILABLE.
    stalled: VecDeque<Up>,
    /// Deliveries gathered during one drain of the down-queue.
    outbox: down::Outbox,
    /// Rate-limit buckets kept outside the sessions, shared by every
    /// worker of the process (`ratelimit::Shared`).
    buckets: Arc<ratelimit::Shared>,
    next_sweep_ms: u64,
    /// A descriptor held back for refusing connections at the open-file
    /// limit (`/dev/null`).
    spare: Option<File>,
    /// Since when `accept` has failed for want of descriptors.
    emfile_since: Option<u64>,
    /// Bytes at the front of `tx` that end a frame already partly written
    /// (set by `write_frames` for the `flush` that follows).
    tx_head: usize,
}

impl Worker {
    /// A worker around an already bound listener. Returns it with the
    /// `Waker` other threads use to get its attention.
    pub fn new(
        cfg: WorkerConfig,
        mut listener: TcpListener,
        stats: Arc<WorkerStats>,
        control: Arc<AtomicU8>,
        buckets: Arc<ratelimit::Shared>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let clock = Clock { base: cfg.epoch };
        let now = clock.now();
        let wheel = Wheel::new(cfg.wheel_slots, cfg.tick_ms, now.mono_ms);
        let worker = Worker {
            cfg,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            wheel,
            rx: BytesMut::with_capacity(READ_BUF),
            tx: BytesMut::with_capacity(READ_BUF),
            fired: Vec::new(),
            pending: Vec::new(),
            clock,
            now,
            next_epoch: 0,
            stats,
            control,
            drain: None,
            port: None,
            backend_up: false,
            stalled: VecDeque::new(),
            outbox: down::Outbox::default(),
            buckets,
            next_sweep_ms: now.mono_ms + RATE_SWEEP_MS,
            spare: File::open("/dev/null").ok(),
            emfile_since: None,
            tx_head: 0,
        };
        Ok((worker, waker))
    }

    /// Connects the worker to the uplink (before `run`).
    pub fn set_port(&mut self, port: WorkerPort) {
        self.port = Some(port);
    }

    /// Runs until stopped, or until a drain has closed every connection.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // What the uplink said before this loop started (LinkUp) comes
        // before the first client is accepted.
        self.drain_down();
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => self.drain_down(),
                    Token(key) => {
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.pending) {
                self.on_readable(key);
            }
            if !self.stalled.is_empty() {
                self.unstall();
            }
            self.expire_timers();
            if self.emfile_since.is_some() {
                // At the open-file limit: closes this turn (or other
                // workers') may have freed descriptors.
                self.accept_all();
            }
            match self.control.load(Ordering::Acquire) {
                STOP => return Ok(()),
                DRAIN if self.drain.is_none() => self.start_drain(),
                _ => {}
            }
            if self.drain.is_some() && self.drain_step() {
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.wheel.next_deadline_ms();
        if let Some((queue, deadline)) = &self.drain {
            let close = queue.front().map_or(*deadline, |(at, ..)| *at);
            next = Some(next.map_or(close, |n| n.min(close)));
        }
        if self.emfile_since.is_some() {
            let retry = self.now.mono_ms + EMFILE_RETRY_MS;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        // Wake just after the tick so its slot is due.
        next.map(|at| Duration::from_millis(at.saturating_sub(self.now.mono_ms) + 1))
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _peer)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.emfile_since = None;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) if at_fd_limit(&e) => {
                    // Pending connections stay in the backlog; every turn
                    // retries until they are taken or have waited long
                    // enough to be refused.
                    let since = *self.emfile_since.get_or_insert_with(|| {
                        tracing::warn!(worker = self.cfg.index, "accept: {e}");
                        self.now.mono_ms
                    });
                    if self.now.mono_ms.saturating_sub(since) >= self.cfg.emfile_grace_ms {
                        self.refuse_pending();
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = self.cfg.index, "accept: {e}");
                    return;
                }
            }
        }
    }

    /// At the open-file limit: gives up the spare descriptor, accepts and
    /// closes every pending connection (each client sees its connection
    /// end at once instead of hanging), and takes the spare back.
    fn refuse_pending(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        self.spare = None;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    drop(stream);
                    self.stats.refused_fd_limit.inc();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                // Drained, or another thread took the descriptor first.
                Err(_) => break,
            }
        }
        self.spare = File::open("/dev/null").ok();
        self.emfile_since = None;
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if self.conns.len() >= self.cfg.max_connections {
            return; // dropped: closed at once
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            tracing::warn!("register: {e}");
            return;
        }
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let session = Session::new(self.now.mono_ms, self.next_epoch);
        let deadline = session.deadline_ms(self.now.mono_ms, &self.cfg.session);
        entry.insert(Conn::new(stream, session));
        self.wheel
            .insert(&mut SlabLinks(&mut self.conns), key as u32, deadline);
        self.stats.accepted.inc();
        self.stats.connections_open.inc();
    }

    fn on_readable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // stale event for a closed slot
        };
        let parked = conn.take_read();
        let from_thread = parked.is_none();
        let mut buf = parked.unwrap_or_else(|| std::mem::take(&mut self.rx));
        let mut end = None;
        let mut reads = 0;
        loop {
            if reads == MAX_READS {
                self.pending.push(key);
                break;
            }
            // A parked partial frame reads only what completes it (decode
            // reserved that much); the thread buffer keeps READ_SPARE free.
            let spare = if from_thread {
                READ_SPARE
            } else {
                proto::codec::missing(&buf).max(1)
            };
            match crate::sys::read_into(&self.conns[key].stream, &mut buf, spare) {
                Ok((0, _)) => {
                    end = Some(CloseReason::ClientEof);
                    break;
                }
                Ok((n, filled)) => {
                    reads += 1;
                    self.stats.bytes_in.add(n as u64);
                    // Closing connections discard input; a frame error
                    // voids the rest of the buffer.
                    if self.conns[key].session.state() == State::Closing
                        || self.process(key, &mut buf)
                    {
                        buf.clear();
                    }
                    if !filled {
                        // A short read drained the socket; new data will
                        // raise a new edge. Saves one EAGAIN read per event.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    end = Some(CloseReason::Io);
                    break;
                }
            }
        }
        self.park(key, buf, from_thread);
        self.flush(key);
        if let Some(reason) = end {
            self.end(key, reason);
        }
    }

    /// Puts the read buffer back: a partial frame is copied into a buffer
    /// of its own sized for the whole frame, the thread buffer is kept.
    fn park(&mut self, key: usize, mut buf: BytesMut, from_thread: bool) {
        let conn = &mut self.conns[key];
        if from_thread {
            if !buf.is_empty() {
                let mut own = BytesMut::with_capacity(buf.len() + proto::codec::missing(&buf));
                own.extend_from_slice(&buf);
                conn.park_read(own);
            }
            buf.clear();
            self.rx = buf;
        } else {
            conn.park_read(buf);
        }
    }

    /// Cuts `buf` into frames and hands each to the session. Returns true
    /// when the connection began closing (the rest of `buf` is void).
    fn process(&mut self, key: usize, buf: &mut BytesMut) -> bool {
        loop {
            let conn = &mut self.conns[key];
            let frame = match proto::decode(buf, self.cfg.max_body) {
                Ok(Some(frame)) => frame,
                Ok(None) => return false,
                Err(e) => {
                    let reason = conn.session.on_decode_error(self.now, e, &mut self.tx);
                    self.stats.frames_out.inc();
                    self.begin_close(key, reason);
                    return true;
                }
            };
            self.stats.frames_in.inc();
            let before = self.tx.len();
            let outcome = conn.session.handle_frame(
                self.now,
                &self.cfg.session,
                self.backend_up,
                &self.buckets,
                &frame,
                &mut self.tx,
            );
            if self.tx.len() > before {
                self.stats.frames_out.inc();
            }
            if self.on_outcome(key, outcome, frame) {
                return true;
            }
        }
    }

    fn on_outcome(&mut self, key: usize, outcome: Outcome, frame: Frame) -> bool {
        match outcome {
            Outcome::Continue => {}
            Outcome::Forward => {
                let s = &self.conns[key].session;
                let item = Up::Client {
                    session: uplink::session_ref(self.cfg.index, key, s.epoch()),
                    uin: s.uin(),
                    device: s.device(),
                    frame,
                };
                if let Err(Up::Client { frame, .. }) = self.send_up(item) {
                    // No room towards the logic tier: answered now (rule
                    // 13), and the client is read on as before.
                    self.stats.bounced_full.inc();
                    let conn = &mut self.conns[key];
                    let outcome = conn
                        .session
                        .answer_unavailable(self.now, &frame, &mut self.tx);
                    self.stats.frames_out.inc();
                    if let Outcome::Close(reason) = outcome {
                        self.begin_close(key, reason);
                        return true;
                    }
                } else {
                    self.stats.forwarded.inc();
                }
            }
            Outcome::Heartbeat => self.stats.heartbeats.inc(),
            Outcome::HeartbeatRearm | Outcome::LoggedIn => {
                if outcome == Outcome::LoggedIn {
                    self.stats.logins_ok.inc();
                    self.stats.sessions_open.inc();
                    if self.backend_up {
                        let item = self.announce(key, false);
                        let _ = self.send_up(item);
                    }
                } else {
                    self.stats.heartbeats.inc();
                }
                let deadline = self.conns[key]
                    .session
                    .deadline_ms(self.now.mono_ms, &self.cfg.session);
                self.wheel
                    .insert(&mut SlabLinks(&mut self.conns), key as u32, deadline);
            }
            Outcome::Close(reason) => {
                self.begin_close(key, reason);
                return true;
            }
        }
        false
    }

    /// Counts a close and starts the lingering close: the ERROR (already
    /// in the output buffer) is flushed, the write side shut down, and
    /// input discarded until EOF or the linger timer.
    fn begin_close(&mut self, key: usize, reason: CloseReason) {
        self.count_close(key, reason);
        let conn = &mut self.conns[key];
        if conn.session.state() != State::Closing {
            conn.session.begin_closing(self.now);
        }
        let deadline = conn
            .session
            .deadline_ms(self.now.mono_ms, &self.cfg.session);
        self.wheel
            .insert(&mut SlabLinks(&mut self.conns), key as u32, deadline);
    }

    fn count_close(&mut self, key: usize, reason: CloseReason) {
        let session = &self.conns[key].session;
        self.stats.closed(reason);
        match reason {
            CloseReason::Unauthenticated(f) => self.stats.login_failed(f),
            CloseReason::LoginTimeout => self.stats.login_failed(LoginFailure::Timeout),
            CloseReason::BadFrame | CloseReason::TooLarge if !session.logged_in() => {
                self.stats.login_failed(LoginFailure::BadBody)
            }
            CloseReason::IdleTimeout => self.stats.expiries.inc(),
            _ => {}
        }
        if session.logged_in() {
            // Rule 10 across a reconnect: the next login of this device
            // starts from this bucket.
            let now = self.now.mono_ms as u32;
            let limits = &self.cfg.session.rate;
            self.buckets.closed(
                limits,
                session.uin(),
                session.device(),
                session.send_tat(),
                now,
            );
            self.stats.sessions_open.dec();
            if self.backend_up {
                let item = Up::Close {
                    session: uplink::session_ref(self.cfg.index, key, session.epoch()),
                    uin: session.uin(),
                    device: session.device(),
                };
                let _ = self.send_up(item);
            }
        }
    }

    /// The read side ended (EOF or error): a closing connection is done,
    /// a live one is counted and removed.
    fn end(&mut self, key: usize, reason: CloseReason) {
        if !self.conns.contains(key) {
            return;
        }
        if self.conns[key].session.state() != State::Closing {
            self.count_close(key, reason);
        }
        self.remove(key);
    }

    fn remove(&mut self, key: usize) {
        self.wheel
            .cancel(&mut SlabLinks(&mut self.conns), key as u32);
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.stats.connections_open.dec();
        // At the open-file limit, the end of this turn retries accept.
    }

    /// An `Open` (or, after a reconnect, `Reopen`) for `key`'s session.
    fn announce(&self, key: usize, again: bool) -> Up {
        let s = &self.conns[key].session;
        let (session, uin, device, login_ms) = (
            uplink::session_ref(self.cfg.index, key, s.epoch()),
            s.uin(),
            s.device(),
            s.login_unix_ms(self.now),
        );
        if again {
            Up::Reopen {
                session,
                uin,
                device,
                login_ms,
            }
        } else {
            Up::Open {
                session,
                uin,
                device,
                login_ms,
            }
        }
    }

    /// Queues `item` for the uplink. A session notice that does not fit
    /// waits in `stalled`, in order; a client request that does not fit
    /// (or would overtake a waiting notice) is given back, to be answered
    /// UNAVAILABLE.
    fn send_up(&mut self, item: Up) -> Result<(), Up> {
        let Some(port) = &self.port else {
            return Ok(());
        };
        let request = matches!(item, Up::Client { .. });
        if !self.stalled.is_empty() {
            if request {
                return Err(item);
            }
            self.stalled.push_back(item);
            return Ok(());
        }
        match port.push(item) {
            Ok(()) => Ok(()),
            Err(item) if request => Err(item),
            Err(item) => {
                self.stalled.push_back(item);
                Ok(())
            }
        }
    }

    /// Moves waiting session notices into the up-queue, as room allows.
    fn unstall(&mut self) {
        let Some(port) = &self.port else {
            self.stalled.clear();
            return;
        };
        while let Some(item) = self.stalled.pop_front() {
            if let Err(item) = port.push(item) {
                self.stalled.push_front(item);
                return;
            }
        }
    }

    /// Writes the per-thread output buffer (and anything queued before it)
    /// to `key`'s socket; what the socket will not take is queued on the
    /// connection and WRITABLE interest added.
    fn flush(&mut self, key: usize) {
        let tx_head = std::mem::take(&mut self.tx_head);
        if self.tx.is_empty() {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            self.tx.clear();
            return;
        };
        if conn.has_write() {
            let queue = conn.write_queue();
            queue.extend_from_slice(&self.tx);
            self.tx.clear();
            let queued = queue.len();
            if queued > self.cfg.write_budget && conn.session.state() == State::Active {
                // A slow consumer: what it missed stays in the logic
                // store for SYNC. The queued frames are dropped so that
                // the KICK goes right behind the frame being written and
                // reaches the client before the close.
                if let Some(bufs) = conn.bufs.as_mut() {
                    bufs.drop_queued_frames();
                }
                let mut kick = BytesMut::new();
                conn.session.kick(
                    self.now,
                    &mut kick,
                    proto::pb::KickReason::SlowConsumer,
                    "write queue over budget",
                );
                conn.write_queue().extend_from_slice(&kick);
                self.stats.frames_out.inc();
                self.begin_close(key, CloseReason::SlowConsumer);
            }
            return; // WRITABLE is registered; on_writable sends it in order
        }
        let result = write_some(&mut conn.stream, &self.tx);
        let written = *result.as_ref().unwrap_or(&0);
        self.stats.bytes_out.add(written as u64);
        match result {
            Ok(n) if n == self.tx.len() => {
                self.tx.clear();
                if conn.session.state() == State::Closing {
                    let _ = conn.stream.shutdown(Shutdown::Write);
                }
            }
            Ok(n) => {
                let head = crate::conn::frame_rest(&self.tx, tx_head, n);
                conn.write_queue().extend_from_slice(&self.tx[n..]);
                if let Some(bufs) = conn.bufs.as_mut() {
                    bufs.head = head;
                }
                self.tx.clear();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .reregister(&mut conn.stream, Token(key), interest)
                    .is_err()
                {
                    self.end(key, CloseReason::Io);
                }
            }
            Err(_) => {
                self.tx.clear();
                self.end(key, CloseReason::Io);
            }
        }
    }

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(bufs) = conn.bufs.as_mut().filter(|b| !b.write.is_empty()) else {
            return;
        };
        match write_some(&mut conn.stream, &bufs.write) {
            Ok(n) => {
                self.stats.bytes_out.add(n as u64);
                bufs.consumed(n);
                if bufs.write.is_empty() {
                    conn.free_if_empty();
                    if conn.session.state() == State::Closing {
                        let _ = conn.stream.shutdown(Shutdown::Write);
                    }
                    let _ = self.poll.registry().reregister(
                        &mut conn.stream,
                        Token(key),
                        Interest::READABLE,
                    );
                }
            }
            Err(_) => self.end(key, CloseReason::Io),
        }
    }

    fn expire_timers(&mut self) {
        if self.now.mono_ms >= self.next_sweep_ms {
            self.next_sweep_ms = self.now.mono_ms + RATE_SWEEP_MS;
            self.buckets.sweep(
                &self.cfg.session.rate,
                self.now.mono_ms as u32,
                self.cfg.index,
                self.cfg.workers,
            );
        }
        self.wheel.advance(
            &mut SlabLinks(&mut self.conns),
            self.now.mono_ms,
            &mut self.fired,
        );
        let fired = std::mem::take(&mut self.fired);
        for &key in &fired {
            let key = key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let was_closing = conn.session.state() == State::Closing;
            match conn
                .session
                .on_timer(self.now, &self.cfg.session, &mut self.tx)
            {
                TimerOutcome::Rearm(at) => {
                    self.wheel
                        .insert(&mut SlabLinks(&mut self.conns), key as u32, at);
                }
                TimerOutcome::Close(_) if was_closing => self.remove(key),
                TimerOutcome::Close(CloseReason::IdleTimeout) => {
                    self.count_close(key, CloseReason::IdleTimeout);
                    self.remove(key);
                }
                TimerOutcome::Close(reason) => {
                    self.stats.frames_out.inc();
                    self.begin_close(key, reason);
                    self.flush(key);
                }
            }
        }
        self.fired = fired;
        self.fired.clear();
    }

    /// Rule 12: stop accepting, send every session GOAWAY with a reconnect
    /// delay spread evenly over the drain window, and queue their closes at
    /// those same offsets. Connections not logged in are closed now.
    fn start_drain(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let mut live = Vec::new();
        let mut idle = Vec::new();
        for (key, conn) in &self.conns {
            match conn.session.state() {
                State::Active => live.push(key),
                State::AwaitLogin => idle.push(key),
                State::Closing => {}
            }
        }
        for key in idle {
            self.count_close(key, CloseReason::Drain);
            self.remove(key);
        }
        let n = live.len().max(1) as u64;
        let mut queue = VecDeque::with_capacity(live.len());
        for (i, key) in live.into_iter().enumerate() {
            let offset = drain_offset(self.cfg.drain_ms, i as u64, n, &self.cfg);
            let conn = &self.conns[key];
            conn.session.goaway(&mut self.tx, offset as u32);
            self.stats.frames_out.inc();
            queue.push_back((self.now.mono_ms + offset, key, conn.session.epoch()));
            self.flush(key);
        }
        let deadline = self.now.mono_ms + self.cfg.drain_ms + DRAIN_GRACE.as_millis() as u64;
        tracing::info!(worker = self.cfg.index, sessions = queue.len(), "draining");
        self.drain = Some((queue, deadline));
    }

    /// Closes the sessions whose turn has come. True when the worker is done.
    fn drain_step(&mut self) -> bool {
        let Some((queue, deadline)) = self.drain.as_mut() else {
            return false;
        };
        let deadline = *deadline;
        let mut due = Vec::new();
        while queue
            .front()
            .is_some_and(|(at, ..)| *at <= self.now.mono_ms)
        {
            due.extend(queue.pop_front());
        }
        for (_, key, epoch) in due {
            let live = self
                .conns
                .get(key)
                .is_some_and(|c| c.session.epoch() == epoch && c.session.state() == State::Active);
            if live {
                self.begin_close(key, CloseReason::Drain);
                let _ = self.conns[key].stream.shutdown(Shutdown::Write);
            }
        }
        self.conns.is_empty() || self.now.mono_ms >= deadline
    }
}

/// The GOAWAY delay of the `i`th of `n` live sessions of this worker: the
/// workers' delays interleave (worker `w` of `W` is shifted by `w / W` of
/// one slot), so the process as a whole spreads its reconnects evenly over
/// the window instead of every worker picking the same instants.
fn drain_offset(drain_ms: u64, i: u64, n: u64, cfg: &WorkerConfig) -> u64 {
    let w = cfg.workers.max(1) as u64;
    drain_ms * (i * w + (cfg.index as u64).min(w - 1)) / (n.max(1) * w)
}

/// EMFILE or ENFILE: no descriptor for the connection `accept` would take.
fn at_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Writes as much of `buf` as the socket takes without blocking.
fn write_some(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match stream.write(&buf[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

mod down;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(index: usize, workers: usize) -> WorkerConfig {
        WorkerConfig {
            index,
            workers,
            session: SessionConfig {
                heartbeat: crate::heartbeat::HeartbeatPolicy::default(),
                rate: crate::ratelimit::Limits::default(),
                login_timeout_ms: 10_000,
                linger_ms: 2_000,
                key: proto::TokenKey::new(b"k"),
                session_id_prefix: 0,
            },
            max_body: 65_536,
            tick_ms: 100,
            wheel_slots: 64,
            max_connections: 10,
            drain_ms: 1_000,
            write_budget: 1 << 20,
            epoch: Instant::now(),
            emfile_grace_ms: 250,
        }
    }

    #[test]
    fn drain_delays_of_two_workers_interleave_over_the_window() {
        let n = 100;
        let mut all: Vec<u64> = (0..2)
            .flat_map(|w| (0..n).map(move |i| drain_offset(1_000, i, n, &cfg(w, 2))))
            .collect();
        assert!(all.iter().all(|&d| d < 1_000));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 200, "every session its own instant");
        assert_eq!(drain_offset(1_000, 0, n, &cfg(0, 2)), 0);
        assert_eq!(drain_offset(1_000, 0, n, &cfg(1, 2)), 5);
    }
}
