//! A worker process: one mio event loop driving its share of the sessions
//! (no thread per session). It owns the sockets, a slab of connections, a
//! timer wheel and the [`Stats`]; the protocol logic is in
//! [`crate::session`]. Readiness is drained to `WouldBlock` (STYLE.md 6);
//! read and write buffers are the loop's, and a connection keeps bytes of
//! its own only while a frame is split across reads or a write is short.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use proto::TokenKey;
use slab::Slab;
use socket2::{Domain, Socket, Type};

use crate::session::{Config, Phase, Session};
use crate::shard::source_addr;
use crate::stats::Stats;
use crate::wheel::{Entry, Wheel};
use crate::wire::{FromWorker, ToWorker, WorkerSpec};

const WAKER: Token = Token(usize::MAX);
/// Timer wheel tick.
const TICK_US: u64 = 5_000;
const NO_TIMER: u64 = u64::MAX;
/// Most connects started in one loop turn, so a ramp never starves reads.
const CONNECTS_PER_TURN: u64 = 512;

struct Conn {
    stream: TcpStream,
    s: Session,
    generation: u32,
    timer_tick: u64,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Logged in again after a GOAWAY.
    relogin: bool,
    /// Counted in `Counters::up`.
    up: bool,
}

/// The worker's state: one per process.
pub struct Worker {
    spec: WorkerSpec,
    cfg: Config,
    key: TokenKey,
    poll: Poll,
    conns: Slab<Conn>,
    wheel: Wheel,
    fired: Vec<Entry>,
    generation: u32,
    stats: Stats,
    epoch: Instant,
    next_global: u64,
    inflight: u64,
    ramp_start_us: u64,
    /// (due µs, global index, slab index and generation of the old conn).
    reconnects: BinaryHeap<Reverse<(u64, u64, usize, u32)>>,
    storm_start_us: Option<u64>,
    ramp_end_unix_us: u64,
    chat: Option<chat_paths::ChatRun>,
    inbuf: BytesMut,
    outbuf: BytesMut,
    scratch: Box<[u8]>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.spec.id)
            .field("conns", &self.conns.len())
            .finish()
    }
}

fn unix_now() -> u64 {
    unix_us() / 1_000_000
}

/// Wall-clock microseconds: comparable across processes.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn emit(msg: &FromWorker) -> io::Result<()> {
    let line = serde_json::to_string(msg).map_err(io::Error::other)?;
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A nonblocking TCP connect from `src`. If that port is taken (someone
/// else's socket, or one of ours still closing), the kernel picks a port
/// for the same address at connect time instead.
fn open(src: SocketAddrV4, dst: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    sock.set_tcp_nodelay(true)?;
    match sock.bind(&SocketAddr::V4(src).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EADDRINUSE as i32) => {
            let any = SocketAddrV4::new(*src.ip(), 0);
            let sock = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
            sock.set_tcp_nodelay(true)?;
            nix::sys::socket::setsockopt(
                &sock,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )?;
            sock.bind(&SocketAddr::V4(any).into())?;
            return start_connect(sock, dst);
        }
        Err(e) => return Err(e),
    }
    start_connect(sock, dst)
}

fn start_connect(sock: Socket, dst: SocketAddr) -> io::Result<TcpStream> {
    match sock.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
        None => format!("{:?}", e.kind()),
    }
}

impl Worker {
    pub fn new(spec: WorkerSpec) -> anyhow::Result<Worker> {
        let secret = hex::decode(&spec.secret_hex)?;
        let cfg = Config {
            forced_heartbeat_ms: spec.forced_heartbeat_ms,
            connect_timeout_us: spec.connect_timeout_ms * 1000,
            login_timeout_us: spec.login_timeout_ms * 1000,
            network: proto::pb::NetworkType::try_from(spec.network).unwrap_or_default(),
        };
        Ok(Worker {
            key: TokenKey::new(&secret),
            cfg,
            poll: Poll::new()?,
            conns: Slab::with_capacity(spec.share.count as usize),
            wheel: Wheel::new(1 << 14, 0),
            fired: Vec::new(),
            generation: 0,
            stats: Stats::default(),
            epoch: Instant::now(),
            next_global: spec.share.start,
            inflight: 0,
            ramp_start_us: 0,
            reconnects: BinaryHeap::new(),
            storm_start_us: None,
            ramp_end_unix_us: 0,
            chat: None,
            inbuf: BytesMut::with_capacity(1 << 16),
            outbuf: BytesMut::with_capacity(1 << 12),
            scratch: vec![0u8; 1 << 16].into_boxed_slice(),
            spec,
        })
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Runs until `Stop`, stdin EOF or the deadline; then reports `Final`.
    pub fn run(mut self) -> anyhow::Result<()> {
        let waker = std::sync::Arc::new(Waker::new(self.poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let w = waker.clone();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<ToWorker>(&line) {
                    Ok(cmd) => {
                        if tx.send(cmd).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("worker: bad command {line:?}: {e}"),
                }
                let _ = w.wake();
            }
            let _ = tx.send(ToWorker::Stop);
            let _ = w.wake();
        });

        let mut events = Events::with_capacity(4096);
        let deadline = self.spec.deadline_ms * 1000;
        let progress_us = self.spec.progress_ms.max(10) * 1000;
        let mut next_progress = 0;
        self.ramp_start_us = self.now_us();
        'run: loop {
            let now = self.now_us();
            let timeout = self.next_wakeup(now, next_progress);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            let now = self.now_us();
            for ev in events.iter() {
                if ev.token() != WAKER {
                    // A fresh clock per event: latencies are not batch-rounded.
                    let t = self.now_us();
                    let ready = Ready {
                        readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                        closing: ev.is_read_closed() || ev.is_error(),
                    };
                    self.on_ready(t, ev.token().0, ready);
                }
            }
            self.on_timers(now);
            self.on_reconnects(now);
            self.ramp(now);
            self.chat_send(now);
            if self.ramp_end_unix_us == 0 && self.ramp_done() {
                self.ramp_end_unix_us = unix_us();
            }
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    ToWorker::Snap { id } => emit(&FromWorker::Snap {
                        worker: self.spec.id,
                        id,
                        counters: self.stats.counters.clone(),
                    })?,
                    ToWorker::StormStart => self.storm_start_us = Some(now),
                    ToWorker::ChatJoin { mode } => self.chat_join(now, mode),
                    ToWorker::ChatStart(plan) => self.chat_start(now, plan),
                    ToWorker::Stop => break 'run,
                }
            }
            if now >= next_progress {
                emit(&FromWorker::Progress {
                    worker: self.spec.id,
                    ramp_done: self.ramp_done(),
                    ramp_end_unix_us: self.ramp_end_unix_us,
                    counters: self.stats.counters.clone(),
                })?;
                next_progress = now + progress_us;
            }
            if now >= deadline {
                eprintln!("worker {}: deadline reached, stopping", self.spec.id);
                break;
            }
        }
        let stats = Box::new(std::mem::take(&mut self.stats));
        // Reset rather than FIN: no TIME_WAIT left behind on our side.
        for (_, c) in self.conns.iter() {
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
        }
        emit(&FromWorker::Final {
            worker: self.spec.id,
            peak_rss_kib: crate::procfs::self_peak_rss_kib().unwrap_or(0),
            stats,
        })?;
        Ok(())
    }

    fn ramp_done(&self) -> bool {
        self.next_global >= self.spec.share.start + self.spec.share.count && self.inflight == 0
    }

    fn next_wakeup(&self, now: u64, next_progress: u64) -> Duration {
        let mut due = next_progress;
        if !self.wheel.is_empty() {
            due = due.min((now / TICK_US + 1) * TICK_US);
        }
        if self.next_global < self.spec.share.start + self.spec.share.count
            && self.inflight < u64::from(self.spec.max_inflight)
        {
            due = due.min(now + 1_000);
        }
        if self.chat.as_ref().is_some_and(|c| c.sending(now)) {
            due = due.min(now + 1_000);
        }
        if let Some(Reverse((t, ..))) = self.reconnects.peek() {
            due = due.min(*t);
        }
        Duration::from_micros(due.saturating_sub(now))
    }

    /// Starts as many connects as the rate and the in-flight cap allow.
    fn ramp(&mut self, now: u64) {
        let end = self.spec.share.start + self.spec.share.count;
        if self.next_global >= end {
            return;
        }
        let started = self.next_global - self.spec.share.start;
        let allowed = if self.spec.rate > 0.0 {
            let secs = now.saturating_sub(self.ramp_start_us) as f64 / 1e6;
            ((self.spec.rate * secs) as u64 + 1).saturating_sub(started)
        } else {
            u64::MAX
        };
        let room = u64::from(self.spec.max_inflight).saturating_sub(self.inflight);
        let n = allowed
            .min(room)
            .min(end - self.next_global)
            .min(CONNECTS_PER_TURN);
        for _ in 0..n {
            let g = self.next_global;
            self.next_global += 1;
            let t = self.now_us();
            self.connect(t, g, false);
        }
    }

    fn connect(&mut self, now: u64, global: u64, relogin: bool) {
        self.stats.counters.started += 1;
        let Some(src) = source_addr(global, self.spec.per_source) else {
            self.count_failed("out of source addresses".into());
            return;
        };
        let mut stream = match open(src, self.spec.addr) {
            Ok(s) => s,
            Err(e) => {
                self.count_failed(format!("connect {}", errno_name(&e)));
                return;
            }
        };
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.count_failed(format!("register {}", errno_name(&e)));
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        entry.insert(Conn {
            stream,
            s: Session::new(now, self.spec.uin_base + global),
            generation: self.generation,
            timer_tick: NO_TIMER,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            relogin,
            up: false,
        });
        self.inflight += 1;
        self.arm(idx);
        // Over loopback (and any short path) the handshake is usually done
        // inside connect(): LOGIN goes now, not after a writable event, so
        // the gateway finds it with the accept and is woken once, not
        // twice. A socket still connecting keeps it queued until writable.
        self.login(now, idx);
    }

    fn count_failed(&mut self, reason: String) {
        *self.stats.counters.failed.entry(reason).or_default() += 1;
    }

    /// Makes sure the wheel holds an entry no later than the session's
    /// next deadline. Later entries that become stale are skipped.
    fn arm(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        let Some(due) = c.s.poll_timeout(&self.cfg) else {
            return;
        };
        let tick = due.div_ceil(TICK_US);
        if c.timer_tick == NO_TIMER || tick < c.timer_tick {
            c.timer_tick = tick;
            self.wheel.insert(Entry {
                idx: idx as u32,
                generation: c.generation,
                tick,
            });
        }
    }

    fn on_timers(&mut self, now: u64) {
        self.wheel.advance(now / TICK_US, &mut self.fired);
        let mut fired = std::mem::take(&mut self.fired);
        for e in fired.drain(..) {
            let idx = e.idx as usize;
            let t = self.now_us();
            let Some(c) = self.conns.get_mut(idx) else {
                continue;
            };
            if c.generation != e.generation || c.timer_tick != e.tick {
                continue;
            }
            c.timer_tick = NO_TIMER;
            let ev = c.s.handle_timeout(t, &self.cfg, &mut self.outbuf);
            if !self.outbuf.is_empty() {
                self.stats.counters.hb_sent += 1;
            }
            self.after(t, idx, ev);
        }
        self.fired = fired;
    }

    fn on_reconnects(&mut self, now: u64) {
        while let Some(Reverse((t, global, idx, generation))) = self.reconnects.peek().copied() {
            if t > now {
                break;
            }
            self.reconnects.pop();
            if self
                .conns
                .get(idx)
                .is_some_and(|c| c.generation == generation)
            {
                self.close(idx);
            }
            self.connect(now, global, true);
        }
    }

    fn on_ready(&mut self, now: u64, idx: usize, ready: Ready) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.s.phase() == Phase::Connecting {
            if !ready.writable {
                return;
            }
            // Writable after a nonblocking connect: connected, or SO_ERROR.
            if !self.login(now, idx) {
                return;
            }
        }
        if ready.readable {
            self.read(now, idx, ready.closing);
        }
        if ready.writable {
            self.flush(idx);
        }
    }
}

impl Worker {
    /// Unless the connect failed (then it is counted and dropped), writes
    /// LOGIN, or queues it until the socket is writable. False if dropped.
    fn login(&mut self, now: u64, idx: usize) -> bool {
        let Some(c) = self.conns.get_mut(idx) else {
            return false;
        };
        match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                let reason = format!("connect {}", errno_name(&e));
                self.drop_conn(idx);
                self.count_failed(reason);
                return false;
            }
            Ok(None) => {}
        }
        let token = self
            .key
            .mint(c.s.uin(), 1, unix_now() + self.spec.token_ttl_s);
        c.s.handle_connected(now, &self.cfg, &token, &mut self.outbuf);
        self.after(now, idx, None);
        true
    }
}

/// What an event said about a socket.
#[derive(Debug, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// The peer closed or the socket failed: read to EOF.
    closing: bool,
}

mod chat_paths;
mod io_paths;
