//! What comes back from the logic tier, handed to the connections:
//! deliveries, kicks, terminations, bounced requests and the link's state.
//!
//! Deliveries are gathered for the whole wake (everything the down-queue
//! holds) and each connection then gets its frames with one `writev`: a
//! sender with a window of SENDs outstanding gets its acks, and a busy
//! receiver its PUSHes, in one syscall instead of one `send` per frame,
//! which was most of the gateway's cost under pipelined load. The frames
//! are the uplink's `Bytes` (a fan-out's frame is shared, never copied),
//! and nothing is held per connection once the wake is done. Which target
//! is live, what is too large and what is queued are the connection's
//! decisions (`crate::connection`).

use std::io::{IoSlice, Write};

use bytes::Bytes;

use super::Worker;
use crate::conn::Conn;
use crate::connection::{Delivery, unwritten};
use crate::uplink::Down;

/// Slices per `writev` (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// Frames for clients gathered during one drain of the down-queue.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Distinct frames, each once.
    frames: Vec<Bytes>,
    /// (connection key, index into `frames`), in arrival order.
    spans: Vec<(usize, u32)>,
}

impl Outbox {
    /// Queues `frame` for `key`; a fan-out's targets share one entry.
    pub(super) fn push(&mut self, key: usize, frame: &Bytes) {
        let same = self
            .frames
            .last()
            .is_some_and(|f| f.as_ptr() == frame.as_ptr() && f.len() == frame.len());
        if !same {
            self.frames.push(frame.clone());
        }
        self.spans.push((key, (self.frames.len() - 1) as u32));
    }
}

impl Worker {
    /// Handles everything the uplink sent.
    pub(super) fn drain_down(&mut self) {
        let Some(port) = self.port.clone() else {
            return;
        };
        while let Some(item) = port.pop() {
            if !matches!(item, Down::Deliver { .. }) {
                // Anything else may write or close: what was gathered for
                // a connection goes out before it, in order.
                self.flush_outbox();
            }
            match item {
                Down::LinkUp => {
                    self.sh.handle_link_up();
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        let id = self.id(key);
                        self.conns[key]
                            .conn
                            .handle_link_up(self.now, &mut self.sh, id);
                    }
                }
                Down::LinkDown => self.sh.handle_link_down(),
                Down::Deliver { targets, frame } => {
                    match self.sh.handle_deliver(&frame, &targets) {
                        Delivery::Write => {}
                        Delivery::Dropped => continue,
                        Delivery::AnswerDropped(target) => {
                            let Some((id, epoch)) = self.sh.local(target) else {
                                continue;
                            };
                            self.flush_outbox();
                            let Some(conn) = self.conns.get_mut(id.key()) else {
                                continue;
                            };
                            conn.conn
                                .handle_dropped_reply(&mut self.sh, id, epoch, &frame);
                            self.transmit(id.key());
                            continue;
                        }
                    }
                    for t in targets {
                        let Some((id, epoch)) = self.sh.local(t) else {
                            continue;
                        };
                        if let Some(conn) = self.conns.get(id.key())
                            && conn.conn.accept_delivery(&self.sh, epoch)
                        {
                            self.outbox.push(id.key(), &frame);
                        }
                    }
                }
                Down::Kick { session, reason } => {
                    if let Some((id, epoch)) = self.sh.local(session)
                        && let Some(conn) = self.conns.get_mut(id.key())
                    {
                        conn.conn
                            .handle_kick(self.now, &mut self.sh, id, epoch, reason);
                        self.transmit(id.key());
                    }
                }
                Down::Terminate { session, frame } => {
                    if let Some((id, epoch)) = self.sh.local(session)
                        && let Some(conn) = self.conns.get_mut(id.key())
                    {
                        conn.conn
                            .handle_terminate(self.now, &mut self.sh, id, epoch, &frame);
                        self.transmit(id.key());
                    }
                }
                Down::Bounce { session, frame } => {
                    if let Some((id, epoch)) = self.sh.local(session)
                        && let Some(conn) = self.conns.get_mut(id.key())
                    {
                        conn.conn
                            .handle_bounce(self.now, &mut self.sh, id, epoch, &frame);
                        self.transmit(id.key());
                    }
                }
            }
        }
        self.flush_outbox();
    }

    /// Writes what the outbox gathered: per connection, in order, one
    /// `writev` when its socket has nothing queued already.
    pub(super) fn flush_outbox(&mut self) {
        if self.outbox.spans.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.outbox);
        // Stable: a connection's frames keep their order.
        out.spans.sort_by_key(|&(key, _)| key);
        for group in out.spans.chunk_by(|a, b| a.0 == b.0) {
            let key = group[0].0;
            let frames = group.iter().map(|&(_, i)| &out.frames[i as usize][..]);
            self.write_frames(key, frames);
        }
        out.spans.clear();
        out.frames.clear();
        self.outbox = out;
    }

    /// Writes `frames` to `key` with as few syscalls as the socket allows;
    /// the connection stages the rest (queued, WRITABLE).
    fn write_frames<'a>(&mut self, key: usize, frames: impl Iterator<Item = &'a [u8]> + Clone) {
        let id = self.id(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut written = 0;
        if !conn.conn.has_write() {
            match writev_all(conn, frames.clone()) {
                Ok(n) => written = n,
                Err(_) => {
                    conn.conn
                        .handle_written(self.now, &mut self.sh, id, Err(()));
                    self.apply(key);
                    return;
                }
            }
            self.sh.stats.bytes_out.add(written as u64);
        }
        conn.conn
            .handle_frames_written(&mut self.sh, id, frames, written);
        self.transmit(key);
    }
}

/// `writev`s `frames` until done or the socket would block; bytes written.
fn writev_all<'a>(
    conn: &mut Conn,
    frames: impl Iterator<Item = &'a [u8]> + Clone,
) -> std::io::Result<usize> {
    let total: usize = frames.clone().map(<[u8]>::len).sum();
    let mut done = 0;
    let mut iov: Vec<IoSlice<'_>> = Vec::new();
    while done < total {
        // The slices from `done` on, the first one cut.
        iov.clear();
        iov.extend(
            unwritten(frames.clone(), done)
                .take(MAX_IOV)
                .map(IoSlice::new),
        );
        match conn.stream.write_vectored(&iov) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
