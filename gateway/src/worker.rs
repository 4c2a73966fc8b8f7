//! One worker thread's event loop, a mio driver: its own `Poll`,
//! SO_REUSEPORT listener, connection slab and timer wheel. Nothing here is
//! shared with another worker; the only cross-thread inputs are the control
//! word (drain or stop, with a `Waker`) and, with a logic server, the
//! uplink queues.
//!
//! What it does: accept; read into one per-thread buffer (or the
//! connection's parked partial frame) and hand the bytes to the
//! connection's sans-io [`Connection`]; write what the connection asks
//! (from one per-thread output buffer, or its queue once the socket is
//! writable; deliveries gathered over one wake go out with one `writev`
//! per connection, see `down`); arm the wheel at the deadline the
//! connection reports and hand it the firings; register, re-register and
//! deregister sockets, shut their write side and free their slots when
//! told; pass the uplink's items and the control word on.
//!
//! What it does not decide (all in `crate::connection`): how frames are
//! answered, when a timer is due, the write budget and slow-consumer KICK,
//! the linger after an ERROR, when to shut down or close, drain pacing,
//! bounces and what is announced to the uplink, which delivery is live or
//! too large, which connection may be accepted.
//!
//! I/O rules it keeps: readiness is edge-triggered, so reads and accepts
//! are drained until `WouldBlock` (`Interrupted` is retried); a connection
//! that still has input after `MAX_READS` reads is revisited on the next
//! turn so that one busy client cannot starve the rest; events for removed
//! slots are ignored. At the open-file limit (EMFILE/ENFILE) the worker
//! retries `accept` on every loop turn (at least every [`EMFILE_RETRY_MS`],
//! and right after each close), so pending connections are taken as soon
//! as a descriptor frees up; one that has waited `emfile_grace_ms` is
//! refused with the spare descriptor: it is closed, the connection
//! accepted and closed, the spare reopened.

use std::fs::File;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::conn::{Conn, SlabLinks};
use crate::conn_id::ConnId;
use crate::connection::{ConnConfig, Connection, Drain, Shared};
use crate::metrics::WorkerStats;
use crate::ratelimit;
use crate::session::{CloseReason, Now, SessionConfig};
use crate::uplink::WorkerPort;
use crate::wheel::Wheel;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Reads per connection per turn before yielding to the others.
const MAX_READS: usize = 16;
/// Free space kept at the end of the per-thread read buffer.
const READ_SPARE: usize = 16 * 1024;
/// Initial size of the per-thread read buffer.
const READ_BUF: usize = 64 * 1024;
/// While at the open-file limit, the longest a worker sleeps before it
/// retries `accept` (descriptors freed by other workers raise no event).
const EMFILE_RETRY_MS: u64 = 10;

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

impl WorkerConfig {
    /// The connection policy's part.
    fn conn(&self) -> ConnConfig {
        ConnConfig {
            worker: self.index,
            workers: self.workers,
            session: self.session.clone(),
            max_body: self.max_body,
            write_budget: self.write_budget,
            max_connections: self.max_connections,
            drain_ms: self.drain_ms,
        }
    }
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

/// A worker's event loop and everything it owns.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    emfile_grace_ms: u64,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    wheel: Wheel,
    rx: BytesMut,
    fired: Vec<u32>,
    pending: Vec<usize>,
    clock: Clock,
    now: Now,
    control: Arc<AtomicU8>,
    drain: Option<Drain>,
    /// The uplink, when a logic server is configured (what it sends back
    /// is popped here; what goes to it is pushed through `sh`).
    port: Option<WorkerPort>,
    /// The connections' shared policy state and staged outputs.
    sh: Shared<Option<WorkerPort>>,
    /// Deliveries gathered during one drain of the down-queue.
    outbox: down::Outbox,
    /// A descriptor held back for refusing connections at the open-file
    /// limit (`/dev/null`).
    spare: Option<File>,
    /// Since when `accept` has failed for want of descriptors.
    emfile_since: Option<u64>,
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
            index: cfg.index,
            emfile_grace_ms: cfg.emfile_grace_ms,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            wheel,
            rx: BytesMut::with_capacity(READ_BUF),
            fired: Vec::new(),
            pending: Vec::new(),
            clock,
            now,
            control,
            drain: None,
            port: None,
            sh: Shared::new(cfg.conn(), stats, buckets, None, now),
            outbox: down::Outbox::default(),
            spare: File::open("/dev/null").ok(),
            emfile_since: None,
        };
        Ok((worker, waker))
    }

    /// Connects the worker to the uplink (before `run`).
    pub fn set_port(&mut self, port: WorkerPort) {
        self.port = Some(port.clone());
        let stats = self.sh.stats.clone();
        let buckets = self.sh.buckets.clone();
        let cfg = self.sh.cfg.clone();
        self.sh = Shared::new(cfg, stats, buckets, Some(port), self.now);
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
            self.sh.handle_turn(self.now);
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
        if let Some(drain) = &self.drain {
            let close = drain.poll_timeout();
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
                        tracing::warn!(worker = self.index, "accept: {e}");
                        self.now.mono_ms
                    });
                    if self.now.mono_ms.saturating_sub(since) >= self.emfile_grace_ms {
                        self.refuse_pending();
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = self.index, "accept: {e}");
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
                    self.sh.stats.refused_fd_limit.inc();
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

    fn id(&self, key: usize) -> ConnId {
        ConnId::new(self.index, key)
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if !self.sh.may_accept(self.conns.len()) {
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
        let id = ConnId::new(self.index, key);
        let conn = Connection::new(self.now, &mut self.sh, id);
        entry.insert(Conn::new(stream, conn));
        self.apply(key);
    }

    fn on_readable(&mut self, key: usize) {
        let id = self.id(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return; // stale event for a closed slot
        };
        let parked = conn.conn.take_read();
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
                Connection::read_wanted(&buf)
            };
            let conn = &mut self.conns[key];
            match crate::sys::read_into(&conn.stream, &mut buf, spare) {
                Ok((0, _)) => {
                    end = Some(CloseReason::ClientEof);
                    break;
                }
                Ok((n, filled)) => {
                    reads += 1;
                    self.sh.stats.bytes_in.add(n as u64);
                    conn.conn.handle_read(self.now, &mut self.sh, id, &mut buf);
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
        let conn = &mut self.conns[key];
        conn.conn.park_read(&mut buf, from_thread);
        if from_thread {
            self.rx = buf;
        }
        if !self.transmit(key) {
            return;
        }
        if let Some(reason) = end {
            self.conns[key]
                .conn
                .handle_eof(self.now, &mut self.sh, id, reason);
            self.apply(key);
        }
    }

    /// Writes what the connection staged, then applies the rest of its
    /// outputs. False if the slot was freed.
    fn transmit(&mut self, key: usize) -> bool {
        let id = self.id(key);
        let conn = &mut self.conns[key];
        if let Some(bytes) = conn.conn.poll_transmit(self.now, &mut self.sh, id) {
            let result = write_some(&mut conn.stream, bytes);
            if let Ok(n) = result {
                self.sh.stats.bytes_out.add(n as u64);
            }
            conn.conn
                .handle_written(self.now, &mut self.sh, id, result.map_err(drop));
        }
        self.apply(key)
    }

    /// Carries out the outputs the connection at `key` staged: socket
    /// interest, write-side shutdown, timer, close. False if the slot was
    /// freed.
    fn apply(&mut self, key: usize) -> bool {
        let id = self.id(key);
        if let Some(writable) = self.sh.poll_interest() {
            let interest = if writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let conn = &mut self.conns[key];
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
                .is_err()
                && writable
            {
                conn.conn
                    .handle_eof(self.now, &mut self.sh, id, CloseReason::Io);
            }
        }
        if self.sh.poll_shutdown() {
            let _ = self.conns[key].stream.shutdown(Shutdown::Write);
        }
        let timer = self.sh.poll_timeout();
        if self.sh.poll_close() {
            self.wheel
                .cancel(&mut SlabLinks(&mut self.conns), key as u32);
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            // At the open-file limit, the end of this turn retries accept.
            return false;
        }
        if let Some(at) = timer {
            self.wheel
                .insert(&mut SlabLinks(&mut self.conns), key as u32, at);
        }
        true
    }

    fn on_writable(&mut self, key: usize) {
        let id = self.id(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(queued) = conn.conn.poll_queued() else {
            return;
        };
        let result = write_some(&mut conn.stream, queued);
        if let Ok(n) = result {
            self.sh.stats.bytes_out.add(n as u64);
        }
        conn.conn
            .handle_written(self.now, &mut self.sh, id, result.map_err(drop));
        self.apply(key);
    }

    fn expire_timers(&mut self) {
        self.wheel.advance(
            &mut SlabLinks(&mut self.conns),
            self.now.mono_ms,
            &mut self.fired,
        );
        let fired = std::mem::take(&mut self.fired);
        for &key in &fired {
            let key = key as usize;
            let id = self.id(key);
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.conn.handle_timeout(self.now, &mut self.sh, id);
            self.transmit(key);
        }
        self.fired = fired;
        self.fired.clear();
    }

    /// Rule 12: stop accepting; connections not logged in close now, every
    /// live session gets GOAWAY and its turn to close (`Drain`).
    fn start_drain(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        let mut live = Vec::new();
        for key in keys {
            let id = self.id(key);
            let conn = &mut self.conns[key].conn;
            if conn.handle_drain_start(self.now, &mut self.sh, id) {
                live.push((key, u64::from(conn.session().epoch())));
            }
            self.apply(key);
        }
        let mut drain = Drain::new(self.now.mono_ms, &self.sh.cfg, live.len());
        for (key, epoch) in live {
            let delay = drain.schedule(key, epoch);
            let id = self.id(key);
            self.conns[key].conn.handle_goaway(&mut self.sh, id, delay);
            self.transmit(key);
        }
        tracing::info!(worker = self.index, sessions = drain.len(), "draining");
        self.drain = Some(drain);
    }

    /// Closes the sessions whose turn has come. True when the worker is done.
    fn drain_step(&mut self) -> bool {
        let Some(mut drain) = self.drain.take() else {
            return false;
        };
        while let Some((key, epoch)) = drain.poll_due(self.now.mono_ms) {
            let id = self.id(key);
            if let Some(conn) = self.conns.get_mut(key) {
                conn.conn
                    .handle_drain_close(self.now, &mut self.sh, id, epoch);
                self.transmit(key);
            }
        }
        let over = drain.is_over(self.now.mono_ms, self.conns.len());
        self.drain = Some(drain);
        over
    }
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
