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
//! Backpressure: a full up-queue makes the worker stop reading its clients
//! until the uplink has made room (the worker sets `want_room`; the uplink
//! wakes it after draining). A full down-queue makes the uplink stop reading
//! the link until the worker has caught up.
//!
//! While the logic server is away the uplink reconnects with exponential
//! backoff; workers have been told `LinkDown` and answer rule 13's
//! UNAVAILABLE themselves; a client frame still queued when the link fell,
//! or already written to it and never answered ([`InFlight`]), is bounced
//! back so it is answered too. After each reconnect the workers are
//! told `LinkUp` and re-announce every live session (`Reopen`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use proto::Frame;
use proto::link::{self, LinkMsg, SessionRef};

use crate::inflight::InFlight;

const LINK: Token = Token(0);
const DOORBELL: Token = Token(1);
/// Items taken from one worker's queue per turn.
const BATCH: usize = 4096;
/// Stop draining worker queues while this much output is unwritten.
const OUT_HIGH_WATER: usize = 4 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// A waker that is rung only while its owner sleeps.
#[derive(Debug)]
pub struct Doorbell {
    waker: Waker,
    asleep: AtomicBool,
}

impl Doorbell {
    pub fn ring(&self) {
        if self.asleep.swap(false, Ordering::AcqRel) {
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
    /// full (the caller then stops reading clients: see `want_room`).
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
    /// Items that did not fit in `down`, in order.
    overflow: VecDeque<Down>,
    wake: bool,
}

/// The uplink thread's state.
#[derive(Debug)]
pub struct Uplink {
    addr: SocketAddr,
    identity: Identity,
    poll: Poll,
    doorbell: Arc<Doorbell>,
    workers: Vec<WorkerSide>,
    link: Option<TcpStream>,
    out: BytesMut,
    inbuf: BytesMut,
    connected: Arc<AtomicBool>,
    /// Requests written to this link and not yet answered.
    inflight: InFlight,
}

impl Uplink {
    /// Builds the uplink and one port per worker. `wakers[i]` is worker
    /// `i`'s waker; `queue` is the capacity of each queue.
    pub fn new(
        addr: SocketAddr,
        identity: Identity,
        wakers: &[Arc<Waker>],
        queue: usize,
    ) -> io::Result<(Uplink, Vec<WorkerPort>)> {
        let poll = Poll::new()?;
        let doorbell = Arc::new(Doorbell {
            waker: Waker::new(poll.registry(), DOORBELL)?,
            asleep: AtomicBool::new(false),
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
                wake: false,
            });
        }
        let uplink = Uplink {
            addr,
            identity,
            poll,
            doorbell,
            workers: sides,
            link: None,
            out: BytesMut::with_capacity(64 * 1024),
            inbuf: BytesMut::with_capacity(64 * 1024),
            connected: Arc::new(AtomicBool::new(false)),
            inflight: InFlight::default(),
        };
        Ok((uplink, ports))
    }

    /// True while the link is up (for metrics).
    pub fn connected(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// Runs for the life of the process: connect, serve the link,
    /// reconnect.
    pub fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut events = Events::with_capacity(256);
        loop {
            match self.connect() {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    tracing::info!(logic = %self.addr, "uplink connected");
                    if let Err(e) = self.serve(&mut events) {
                        tracing::warn!(logic = %self.addr, "uplink lost: {e}");
                    }
                    self.link_down();
                }
                Err(e) => {
                    tracing::debug!(logic = %self.addr, "uplink connect: {e}");
                    // Answer what was queued meanwhile, then wait.
                    self.bounce_queued();
                    let _ = self.poll.poll(&mut events, Some(backoff));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let std = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
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
        self.link = Some(stream);
        self.connected.store(true, Ordering::Release);
        for i in 0..self.workers.len() {
            self.send_down(i, Down::LinkUp);
        }
        self.wake_workers();
        Ok(())
    }

    fn link_down(&mut self) {
        if let Some(mut s) = self.link.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        self.connected.store(false, Ordering::Release);
        for i in 0..self.workers.len() {
            self.send_down(i, Down::LinkDown);
        }
        // Written but never answered: the oldest requests, answered first.
        for (session, frame) in self.inflight.take_all() {
            self.send_down(worker_of(session), Down::Bounce { session, frame });
        }
        self.bounce_queued();
    }

    /// With no link: drops announcements and bounces client frames back to
    /// their workers so every request gets its rule-13 answer.
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
            let idle = self.out.is_empty()
                && self
                    .workers
                    .iter()
                    .all(|w| w.up.is_empty() && w.overflow.is_empty());
            let timeout = if idle {
                // Ring-before-sleep: workers ring only after this store.
                self.doorbell.asleep.store(true, Ordering::Release);
                if self.workers.iter().all(|w| w.up.is_empty()) {
                    None
                } else {
                    Some(Duration::ZERO)
                }
            } else if self.workers.iter().any(|w| !w.overflow.is_empty()) {
                Some(Duration::from_millis(1))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.doorbell.asleep.store(false, Ordering::Release);
            let mut readable = false;
            for ev in events.iter() {
                if ev.token() == LINK {
                    readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    writable |= ev.is_writable();
                }
            }
            self.retry_overflow();
            // Read the link only while every worker keeps up.
            if (readable || !self.inbuf.is_empty())
                && self.workers.iter().all(|w| w.overflow.is_empty())
            {
                self.read_link()?;
            }
            self.drain_workers();
            if writable || !self.out.is_empty() {
                writable = self.write_link()?;
            }
            self.wake_workers();
        }
    }

    fn drain_workers(&mut self) {
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
                        link::encode_client_frame(&mut self.out, session, uin, device, &frame);
                        self.inflight.written(session, frame);
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
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while self.workers.iter().all(|w| w.overflow.is_empty()) {
            let msg = link::decode(&mut self.inbuf, link::DEFAULT_MAX_LINK_FRAME)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let Some(msg) = msg else { break };
            self.dispatch(msg);
        }
        Ok(())
    }

    fn dispatch(&mut self, msg: LinkMsg) {
        match msg {
            LinkMsg::Deliver { targets, frame } => {
                if let [one] = targets[..] {
                    self.inflight.answered(one, &frame);
                }
                if self.workers.len() == 1 {
                    self.send_down(0, Down::Deliver { targets, frame });
                    return;
                }
                let mut by_worker: Vec<Vec<SessionRef>> = vec![Vec::new(); self.workers.len()];
                for t in targets {
                    if let Some(v) = by_worker.get_mut(worker_of(t)) {
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
                self.send_down(worker_of(session), Down::Kick { session, reason })
            }
            LinkMsg::Terminate { session, frame } => {
                self.inflight.answered(session, &frame);
                self.send_down(worker_of(session), Down::Terminate { session, frame });
            }
            LinkMsg::Ping { nonce } => link::encode_pong(&mut self.out, nonce),
            other => tracing::debug!("uplink ignores {:?}", other.kind()),
        }
    }

    fn send_down(&mut self, worker: usize, item: Down) {
        let Some(side) = self.workers.get_mut(worker) else {
            return;
        };
        side.wake = true;
        if !side.overflow.is_empty() {
            side.overflow.push_back(item);
        } else if let Err(item) = side.down.push(item) {
            side.overflow.push_back(item);
        }
    }

    fn retry_overflow(&mut self) {
        for side in &mut self.workers {
            while let Some(item) = side.overflow.pop_front() {
                if let Err(item) = side.down.push(item) {
                    side.overflow.push_front(item);
                    break;
                }
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

/// The worker a session lives on: the high half of its `conn`.
pub fn worker_of(s: SessionRef) -> usize {
    (s.conn >> 32) as usize
}

/// The `SessionRef` of slot `key` on worker `index` at `epoch`.
pub fn session_ref(index: usize, key: usize, epoch: u32) -> SessionRef {
    SessionRef {
        conn: ((index as u64) << 32) | key as u64,
        epoch: u64::from(epoch),
    }
}
