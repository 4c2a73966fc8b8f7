//! The network thread: one mio loop owning the link listener and every
//! gateway link connection.
//!
//! Reads are drained to `WouldBlock` and decoded with `proto::link`; each
//! `Open`/`Close`/`Client` goes to the shard owning its uin, collected into
//! one batch per shard per loop turn. Link bytes produced by shards arrive
//! on one crossbeam queue (doorbell: a `mio::Waker`); each gateway's bytes
//! go to its *primary* link connection (the oldest live one), so everything
//! one shard says to one gateway stays in order, and a connection's queued
//! buffers go out with vectored writes, many frames per syscall.
//!
//! Each turn reads at most `READ_BUDGET` bytes per connection, and no link
//! is read while any shard has more than `SHARD_QUEUE_HIGH` batches queued:
//! the unread connections are remembered (readiness is edge-triggered) and
//! retried every millisecond, so an overloaded server pushes back on the
//! gateways through TCP instead of queueing without bound.
//!
//! A gateway's links all carry the `instance` its first one said in
//! `Hello`; a link claiming a gateway id that is live under another
//! instance is a second gateway process with the same id (a bug or a
//! forgery, never chance: both are 64 random bits): it is refused, logged
//! as an error and counted, and the gateway holding the id keeps it.
//!
//! When a gateway's last link connection closes, every shard is told
//! (`GatewayDown`) in the same batches as that gateway's earlier notices,
//! so the drop is ordered after them and before anything from a
//! reconnect. A gateway whose unsent backlog exceeds the configured limit
//! is a slow consumer: its link is closed and it re-announces on reconnect.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use proto::link::{self, LinkMsg};
use slab::Slab;

use crate::metrics::Stats;
use crate::shard::{ShardMsg, shard_of_uin};
use crate::worker::{Input, IoBatch};

const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the waker the shards and the signal handler ring.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Bytes asked for per read.
const READ_CHUNK: usize = 64 * 1024;
/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;
/// Most bytes read from one connection per loop turn, so one busy gateway
/// cannot starve the others or the output path.
const READ_BUDGET: usize = 256 * 1024;
/// Batches queued to one shard above which the loop stops reading links
/// until the shards catch up (backpressure reaches the gateways via TCP).
const SHARD_QUEUE_HIGH: usize = 256;
/// Poll timeout while some connection still has unread input.
const RETRY_READ: Duration = Duration::from_millis(1);

/// Settings of the network thread.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub max_link_frame: usize,
    pub max_backlog: usize,
    pub nodelay: bool,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wq: VecDeque<Bytes>,
    queued: usize,
    gw: Option<u64>,
}

/// The link connections of one gateway process.
#[derive(Debug)]
struct GatewayLinks {
    /// The process's `Hello` instance nonce.
    instance: u64,
    /// Connection keys, oldest (primary) first.
    conns: Vec<usize>,
}

/// The network thread's state.
#[derive(Debug)]
pub struct Net {
    poll: Poll,
    listener: TcpListener,
    cfg: NetConfig,
    conns: Slab<Conn>,
    /// Live link connections per gateway id.
    gateways: HashMap<u64, GatewayLinks>,
    shards: Vec<Sender<Input>>,
    batches: Vec<Vec<ShardMsg>>,
    from_shards: Receiver<IoBatch>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    /// Read buffer: bytes are copied from it into the connection's
    /// buffer, so a connection only holds what it has not decoded yet.
    scratch: Vec<u8>,
    /// Connections with input left unread (budget spent or shards busy):
    /// edge-triggered readiness will not report them again.
    unread: Vec<usize>,
}

impl Net {
    /// Sets up the loop; `poll` must be the one `WAKER` was made with.
    pub fn new(
        poll: Poll,
        mut listener: TcpListener,
        cfg: NetConfig,
        shards: Vec<Sender<Input>>,
        from_shards: Receiver<IoBatch>,
        stop: Arc<AtomicBool>,
        stats: Arc<Stats>,
    ) -> io::Result<Net> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let batches = shards.iter().map(|_| Vec::new()).collect();
        Ok(Net {
            poll,
            listener,
            cfg,
            conns: Slab::new(),
            gateways: HashMap::new(),
            shards,
            batches,
            from_shards,
            stop,
            stats,
            scratch: vec![0; READ_CHUNK],
            unread: Vec::new(),
        })
    }

    /// Runs until the stop flag is set or polling fails, then tells the
    /// shards to stop.
    pub fn run(mut self) -> io::Result<()> {
        let result = self.serve();
        for tx in &self.shards {
            let _ = tx.send(Input::Stop);
        }
        result
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::Acquire) {
            let timeout = (!self.unread.is_empty()).then_some(RETRY_READ);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(key);
                        }
                        if ev.is_writable() && self.conns.contains(key) {
                            self.write(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.unread) {
                self.read(key);
            }
            self.flush_to_shards();
            self.drain_shards();
        }
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.cfg.nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self
                        .poll
                        .registry()
                        .register(&mut stream, Token(key), interest)
                    {
                        tracing::warn!(%peer, error = %e, "register link");
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        rbuf: BytesMut::new(),
                        wq: VecDeque::new(),
                        queued: 0,
                        gw: None,
                    });
                    self.stats.links.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, key, "link connected");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: try again on the next event.
                    tracing::warn!(error = %e, "accept");
                    return;
                }
            }
        }
    }

    /// Reads `key` until `WouldBlock`, or until its budget is spent or the
    /// shards are backed up (then it is retried on the next turn).
    fn read(&mut self, key: usize) {
        let overloaded = self.shards.iter().any(|tx| tx.len() > SHARD_QUEUE_HIGH);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if overloaded {
            if !self.unread.contains(&key) {
                self.unread.push(key);
            }
            return;
        }
        let mut closed = false;
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                if !self.unread.contains(&key) {
                    self.unread.push(key);
                }
                break;
            }
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&self.scratch[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!(key, error = %e, "link read");
                    closed = true;
                    break;
                }
            }
        }
        if let Err(why) = self.decode_all(key) {
            tracing::warn!(key, %why, "link protocol error, closing");
            closed = true;
        }
        if closed {
            self.close(key);
        } else if !self.conns[key].wq.is_empty() {
            self.write(key);
        }
    }

    /// Decodes every whole frame buffered on `key` and routes it.
    fn decode_all(&mut self, key: usize) -> Result<(), String> {
        let n = self.shards.len();
        loop {
            let conn = &mut self.conns[key];
            let msg = match link::decode(&mut conn.rbuf, self.cfg.max_link_frame) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            self.stats.link_frames_in.fetch_add(1, Ordering::Relaxed);
            let gw = conn.gw;
            match (gw, msg) {
                (
                    None,
                    LinkMsg::Hello {
                        gateway_id,
                        instance,
                    },
                ) => {
                    if let Some(held) = self.gateways.get(&gateway_id)
                        && held.instance != instance
                    {
                        self.stats
                            .gateway_id_conflicts
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            key,
                            gateway_id,
                            instance,
                            held_by = held.instance,
                            "refusing a link: its gateway id is linked by another gateway process"
                        );
                        return Err(format!(
                            "gateway id {gateway_id:#x} is already linked by instance {:#x}",
                            held.instance
                        ));
                    }
                    conn.gw = Some(gateway_id);
                    self.gateways
                        .entry(gateway_id)
                        .or_insert(GatewayLinks {
                            instance,
                            conns: Vec::new(),
                        })
                        .conns
                        .push(key);
                    self.stats
                        .gateways
                        .store(self.gateways.len() as u64, Ordering::Relaxed);
                    tracing::info!(key, gateway_id, instance, "gateway hello");
                }
                (Some(_), LinkMsg::Hello { .. }) => return Err("second Hello".into()),
                (None, _) => return Err("first frame is not Hello".into()),
                (Some(_), LinkMsg::Ping { nonce }) => {
                    let mut b = BytesMut::new();
                    link::encode_pong(&mut b, nonce);
                    // Written after decoding: a failed write closes `key`.
                    self.queue(key, b.freeze());
                }
                (Some(_), LinkMsg::Pong { .. }) => {}
                (
                    Some(gw),
                    msg @ (LinkMsg::Open { uin, .. }
                    | LinkMsg::Reopen { uin, .. }
                    | LinkMsg::Close { uin, .. }
                    | LinkMsg::Client { uin, .. }),
                ) => {
                    self.batches[shard_of_uin(uin, n)].push(ShardMsg::Link { gw, msg });
                }
                (Some(_), other) => {
                    return Err(format!("unexpected {:?} from a gateway", other.kind()));
                }
            }
        }
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.stats.links.fetch_sub(1, Ordering::Relaxed);
        let Some(gw) = conn.gw else {
            return;
        };
        let Some(links) = self.gateways.get_mut(&gw) else {
            return;
        };
        links.conns.retain(|&k| k != key);
        if links.conns.is_empty() {
            self.gateways.remove(&gw);
            self.stats
                .gateways
                .store(self.gateways.len() as u64, Ordering::Relaxed);
            for b in &mut self.batches {
                b.push(ShardMsg::GatewayDown { gw });
            }
            tracing::info!(gateway_id = gw, "gateway down: its sessions are dropped");
        }
    }

    fn queue(&mut self, key: usize, bytes: Bytes) {
        let conn = &mut self.conns[key];
        conn.queued += bytes.len();
        conn.wq.push_back(bytes);
    }

    /// Writes as much of `key`'s queue as the socket takes.
    fn write(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        while !conn.wq.is_empty() {
            let iov: Vec<IoSlice<'_>> = conn
                .wq
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            match conn.stream.write_vectored(&iov) {
                Ok(0) => {
                    self.close(key);
                    return;
                }
                Ok(mut n) => {
                    conn.queued -= n;
                    while n > 0 {
                        let front = conn.wq.front_mut().expect("written bytes were queued");
                        if n >= front.len() {
                            n -= front.len();
                            conn.wq.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!(key, error = %e, "link write");
                    self.close(key);
                    return;
                }
            }
        }
    }

    fn flush_to_shards(&mut self) {
        for (tx, batch) in self.shards.iter().zip(self.batches.iter_mut()) {
            if !batch.is_empty() {
                let _ = tx.send(Input::Batch(std::mem::take(batch)));
            }
        }
    }

    /// Moves the shards' output onto connection queues, then writes.
    fn drain_shards(&mut self) {
        let mut touched: Vec<usize> = Vec::new();
        while let Ok(batch) = self.from_shards.try_recv() {
            for (gw, bytes) in batch {
                // A gateway without a link gets nothing: it re-announces and
                // its sessions SYNC after reconnecting.
                let Some(&key) = self.gateways.get(&gw).and_then(|l| l.conns.first()) else {
                    continue;
                };
                self.queue(key, bytes);
                if !touched.contains(&key) {
                    touched.push(key);
                }
            }
        }
        for key in touched {
            self.write(key);
            if let Some(conn) = self.conns.get(key)
                && conn.queued > self.cfg.max_backlog
            {
                tracing::warn!(
                    key,
                    queued = conn.queued,
                    "gateway too slow, closing its link"
                );
                self.close(key);
            }
        }
        self.flush_to_shards();
    }
}
