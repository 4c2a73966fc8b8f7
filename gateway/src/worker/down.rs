//! What comes back from the logic tier: deliveries, kicks, terminations,
//! bounced requests and the link's state.
//!
//! Deliveries are gathered for the whole wake (everything the down-queue
//! holds) and each connection then gets its frames with one `writev`: a
//! sender with a window of SENDs outstanding gets its acks, and a busy
//! receiver its PUSHes, in one syscall instead of one `send` per frame,
//! which was most of the gateway's cost under pipelined load. The frames
//! are the uplink's `Bytes` (a fan-out's frame is shared, never copied),
//! and nothing is held per connection once the wake is done.

use std::io::{IoSlice, Write};

use bytes::Bytes;
use proto::Frame;

use super::Worker;
use crate::conn::Conn;
use crate::session::{CloseReason, Outcome, State};
use crate::uplink::{self, Down};

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
                    self.backend_up = true;
                    let live: Vec<usize> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.session.state() == State::Active)
                        .map(|(k, _)| k)
                        .collect();
                    for key in live {
                        let item = self.announce(key, true);
                        let _ = self.send_up(item);
                    }
                }
                Down::LinkDown => {
                    self.backend_up = false;
                    // Announcements for a dead link are void (LinkUp
                    // re-announces every live session).
                    self.stalled.clear();
                }
                Down::Deliver { targets, frame } => {
                    if body_len(&frame) > self.cfg.max_body {
                        self.oversize(&targets, &frame);
                        continue;
                    }
                    for t in targets {
                        if let Some(key) = self.live(t) {
                            self.outbox.push(key, &frame);
                            self.stats.frames_out.inc();
                            self.stats.delivered.inc();
                        }
                    }
                    continue;
                }
                Down::Kick { session, reason } => {
                    if let Some(key) = self.live(session) {
                        let reason = proto::pb::KickReason::try_from(reason)
                            .unwrap_or(proto::pb::KickReason::Admin);
                        self.conns[key].session.kick(
                            self.now,
                            &mut self.tx,
                            reason,
                            "kicked by the logic tier",
                        );
                        self.stats.frames_out.inc();
                        self.begin_close(key, CloseReason::Kicked);
                        self.flush(key);
                    }
                }
                Down::Terminate { session, frame } => {
                    if let Some(key) = self.live(session) {
                        if body_len(&frame) > self.cfg.max_body {
                            self.stats.oversize_dropped.inc();
                        } else {
                            self.tx.extend_from_slice(&frame);
                        }
                        self.stats.frames_out.inc();
                        self.begin_close(key, CloseReason::BadFrame);
                        self.flush(key);
                    }
                }
                Down::Bounce { session, frame } => self.bounce(session, &frame),
            }
        }
        self.flush_outbox();
    }

    /// Answers a client frame that never reached the logic tier (rule 13).
    pub(super) fn bounce(&mut self, session: proto::link::SessionRef, frame: &Frame) {
        let Some(key) = self.live(session) else {
            return;
        };
        let conn = &mut self.conns[key];
        let outcome = conn
            .session
            .answer_unavailable(self.now, frame, &mut self.tx);
        self.stats.frames_out.inc();
        if let Outcome::Close(reason) = outcome {
            self.begin_close(key, reason);
        }
        self.flush(key);
    }

    /// A frame from the logic tier larger than a client may receive (the
    /// documented max body): dropped and counted. A reply to a request is
    /// answered UNAVAILABLE instead, so the request is not left hanging.
    fn oversize(&mut self, targets: &[proto::link::SessionRef], frame: &Bytes) {
        self.stats.oversize_dropped.inc();
        let [one] = targets else { return };
        if frame_seq(frame) == 0 {
            return; // a PUSH
        }
        let Some(key) = self.live(*one) else { return };
        self.flush_outbox();
        self.conns[key]
            .session
            .answer_dropped_reply(frame, &mut self.tx);
        self.stats.frames_out.inc();
        self.flush(key);
    }

    /// The slot of `s` if it is this worker's, still the same login, and
    /// active.
    pub(super) fn live(&self, s: proto::link::SessionRef) -> Option<usize> {
        let key = (s.conn & 0xffff_ffff) as usize;
        let conn = self.conns.get(key)?;
        let same = uplink::worker_of(s) == self.cfg.index
            && u64::from(conn.session.epoch()) == s.epoch
            && conn.session.state() == State::Active;
        same.then_some(key)
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
    /// what it will not take goes through `flush` (queued, WRITABLE).
    fn write_frames<'a>(&mut self, key: usize, frames: impl Iterator<Item = &'a [u8]> + Clone) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut written = 0;
        if !conn.has_write() {
            match writev_all(conn, frames.clone()) {
                Ok(n) => written = n,
                Err(_) => {
                    self.end(key, CloseReason::Io);
                    return;
                }
            }
            self.stats.bytes_out.add(written as u64);
        }
        // The rest (all of it if a write was already blocked) is queued;
        // its first piece may end a frame partly written.
        let mut at = 0;
        for f in frames.clone() {
            let end = at + f.len();
            if end > written {
                self.tx_head = if at < written { end - written } else { 0 };
                break;
            }
            at = end;
        }
        for f in unwritten(frames, written) {
            self.tx.extend_from_slice(f);
        }
        self.flush(key);
    }
}

/// The `body_len` of an encoded client frame (0 if it is shorter than a
/// header, which the logic tier never sends).
fn body_len(frame: &[u8]) -> usize {
    frame
        .first_chunk::<4>()
        .map_or(0, |b| u32::from_be_bytes(*b) as usize)
}

/// The `seq` of an encoded client frame.
fn frame_seq(frame: &[u8]) -> u32 {
    frame
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
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

/// What is left of `frames` once their first `written` bytes are gone.
fn unwritten<'a>(
    frames: impl Iterator<Item = &'a [u8]>,
    mut written: usize,
) -> impl Iterator<Item = &'a [u8]> {
    frames.filter_map(move |f| {
        if written >= f.len() {
            written -= f.len();
            None
        } else {
            let rest = &f[written..];
            written = 0;
            Some(rest)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::unwritten;

    #[test]
    fn unwritten_drops_whole_frames_then_cuts_the_first_partial_one() {
        let frames: [&[u8]; 3] = [b"abc", b"de", b"fgh"];
        let rest = |n| unwritten(frames.iter().copied(), n).collect::<Vec<_>>();
        assert_eq!(rest(0), vec![&b"abc"[..], b"de", b"fgh"]);
        assert_eq!(rest(4), vec![&b"e"[..], b"fgh"]);
        assert_eq!(rest(5), vec![&b"fgh"[..]]);
        assert!(rest(8).is_empty());
    }
}
