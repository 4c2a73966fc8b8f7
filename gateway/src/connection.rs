//! One client connection's policy, sans-io: quinn-proto's `Connection` is
//! the model. [`Connection`] owns the [`Session`] (the protocol's rules),
//! the connection's own buffers with the write budget and the slow-consumer
//! KICK, the close and linger after an ERROR, its part in a drain, the
//! bounces (rule 13) and what is announced to the uplink; it decides when
//! its timer fires. It owns no socket and no clock.
//!
//! Inputs are `handle_*(now, shared, id, ..)`: bytes read, the timer fired,
//! deliveries, kicks, terminations and bounces from the logic tier, the
//! link up, a drain, bytes written or a socket error. Outputs are polled:
//! [`Connection::poll_transmit`] (bytes to write now) and
//! [`Connection::poll_queued`] (the queue, once the socket is writable),
//! then from [`Shared`] the timer deadline, the socket interest, the
//! write-side shutdown and the close (see `shared`: staged there, because
//! a connection slot is 64 bytes, `crate::conn`). [`Drain`] paces a drain
//! over all of a worker's connections.
//!
//! The driver (`crate::worker`) only moves bytes and arms what it is told.

mod bufs;
mod drain;
mod shared;
pub mod sim;
#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};
use proto::Frame;
use proto::link::SessionRef;

pub use bufs::{Bufs, frame_rest};
pub use drain::{DRAIN_GRACE_MS, Drain};
pub use shared::{ConnConfig, Shared, UpSink};

use crate::conn_id::ConnId;
use crate::session::{CloseReason, LoginFailure, Now, Outcome, Session, State, TimerOutcome};
use crate::uplink::Up;

/// One client connection (48 bytes: the session and one pointer).
#[derive(Debug)]
pub struct Connection {
    session: Session,
    bufs: Option<Box<Bufs>>,
}

/// What to do with a `Deliver` from the logic tier (decided once for all
/// its targets: [`Shared::handle_deliver`]).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Give the frame to every target that is live
    /// ([`Connection::accept_delivery`]).
    Write,
    /// Too large for a client: dropped.
    Dropped,
    /// Too large, and the reply to one request of this session: dropped,
    /// and the request answered UNAVAILABLE
    /// ([`Connection::handle_dropped_reply`]).
    AnswerDropped(SessionRef),
}

impl<U: UpSink> Shared<U> {
    /// The slot a `SessionRef` names, if it is this worker's, and the
    /// epoch to check with [`Connection::is_live`].
    pub fn local(&self, s: SessionRef) -> Option<(ConnId, u64)> {
        let (id, epoch) = ConnId::unpack(s);
        (id.worker as usize == self.cfg.worker).then_some((id, epoch))
    }

    /// A `Deliver` of `frame` (an encoded client frame) to `targets`.
    pub fn handle_deliver(&mut self, frame: &Bytes, targets: &[SessionRef]) -> Delivery {
        if body_len(frame) <= self.cfg.max_body {
            return Delivery::Write;
        }
        self.stats.oversize_dropped.inc();
        match targets {
            [one] if frame_seq(frame) != 0 => Delivery::AnswerDropped(*one),
            _ => Delivery::Dropped, // a PUSH, or a fan-out
        }
    }
}

impl Connection {
    /// A connection just accepted at `now`: it waits for LOGIN; its timer
    /// is staged.
    pub fn new<U: UpSink>(now: Now, sh: &mut Shared<U>, id: ConnId) -> Connection {
        sh.begin(id);
        sh.next_epoch = sh.next_epoch.wrapping_add(1);
        let session = Session::new(now.mono_ms, sh.next_epoch);
        sh.staged.timer = Some(session.deadline_ms(now.mono_ms, &sh.cfg.session));
        sh.stats.accepted.inc();
        sh.stats.connections_open.inc();
        Connection {
            session,
            bufs: None,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn state(&self) -> State {
        self.session.state()
    }

    /// Still the login `epoch` names, and active.
    pub fn is_live(&self, epoch: u64) -> bool {
        u64::from(self.session.epoch()) == epoch && self.state() == State::Active
    }

    /// True while output is queued (the socket would not take it).
    pub fn has_write(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.write.is_empty())
    }

    /// True while the connection holds buffers of its own.
    pub fn has_bufs(&self) -> bool {
        self.bufs.is_some()
    }

    /// Takes the parked partial frame, if any.
    pub fn take_read(&mut self) -> Option<BytesMut> {
        let bufs = self.bufs.as_mut()?;
        if bufs.read.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut bufs.read))
    }

    /// Gives back the read buffer after [`Connection::handle_read`]. A
    /// partial frame left in the worker's shared buffer (`shared`) is
    /// copied into a buffer of its own sized for the whole frame, and the
    /// shared one cleared; a buffer of its own is kept (or freed when
    /// empty).
    pub fn park_read(&mut self, buf: &mut BytesMut, shared: bool) {
        if shared {
            if !buf.is_empty() {
                let mut own = BytesMut::with_capacity(buf.len() + proto::codec::missing(buf));
                own.extend_from_slice(buf);
                self.bufs.get_or_insert_with(Box::default).read = own;
            }
            buf.clear();
        } else if buf.is_empty() {
            self.free_if_empty();
        } else {
            self.bufs.get_or_insert_with(Box::default).read = std::mem::take(buf);
        }
    }

    /// How many bytes to read next into a buffer of this connection's own:
    /// what completes the parked frame (at least 1).
    pub fn read_wanted(buf: &BytesMut) -> usize {
        proto::codec::missing(buf).max(1)
    }

    fn free_if_empty(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.read.is_empty() && b.write.is_empty())
        {
            self.bufs = None;
        }
    }

    /// Bytes arrived in `buf` (the stream's unconsumed front): whole
    /// frames are taken off and handled; a closing connection discards
    /// input, and a frame error voids the rest.
    pub fn handle_read<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        buf: &mut BytesMut,
    ) {
        sh.begin(id);
        if self.state() == State::Closing || self.process(now, sh, id, buf) {
            buf.clear();
        }
    }

    /// The read side ended: EOF (`ClientEof`) or a socket error (`Io`). A
    /// live connection is counted; either way it is over.
    pub fn handle_eof<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        reason: CloseReason,
    ) {
        sh.begin(id);
        self.end(now, sh, id, reason);
    }

    fn end<U: UpSink>(&mut self, now: Now, sh: &mut Shared<U>, id: ConnId, reason: CloseReason) {
        if sh.staged.close {
            return;
        }
        if self.state() != State::Closing {
            self.count_close(now, sh, id, reason);
        }
        sh.tx.clear();
        sh.staged.close = true;
        sh.stats.connections_open.dec();
    }

    /// Cuts `buf` into frames and hands each to the session. True when the
    /// connection began closing (the rest of `buf` is void).
    fn process<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        buf: &mut BytesMut,
    ) -> bool {
        loop {
            let frame = match proto::decode(buf, sh.cfg.max_body) {
                Ok(Some(frame)) => frame,
                Ok(None) => return false,
                Err(e) => {
                    let reason = self.session.on_decode_error(now, e, &mut sh.tx);
                    sh.stats.frames_out.inc();
                    self.begin_close(now, sh, id, reason);
                    return true;
                }
            };
            sh.stats.frames_in.inc();
            let before = sh.tx.len();
            let outcome = self.session.handle_frame(
                now,
                &sh.cfg.session,
                sh.link_up,
                &sh.buckets,
                &frame,
                &mut sh.tx,
            );
            if sh.tx.len() > before {
                sh.stats.frames_out.inc();
            }
            if self.on_outcome(now, sh, id, outcome, frame) {
                return true;
            }
        }
    }

    fn on_outcome<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        outcome: Outcome,
        frame: Frame,
    ) -> bool {
        match outcome {
            Outcome::Continue => {}
            Outcome::Forward => {
                let s = &self.session;
                let item = Up::Client {
                    session: id.pack(s.epoch()),
                    uin: s.uin(),
                    device: s.device(),
                    frame,
                };
                if let Err(Up::Client { frame, .. }) = sh.send_up(item) {
                    // No room towards the logic tier: answered now (rule
                    // 13), and the client is read on as before.
                    sh.stats.bounced_full.inc();
                    let outcome = self.session.answer_unavailable(now, &frame, &mut sh.tx);
                    sh.stats.frames_out.inc();
                    if let Outcome::Close(reason) = outcome {
                        self.begin_close(now, sh, id, reason);
                        return true;
                    }
                } else {
                    sh.stats.forwarded.inc();
                }
            }
            Outcome::Heartbeat => sh.stats.heartbeats.inc(),
            Outcome::HeartbeatRearm | Outcome::LoggedIn => {
                if outcome == Outcome::LoggedIn {
                    sh.stats.logins_ok.inc();
                    sh.stats.sessions_open.inc();
                    if sh.link_up {
                        let item = self.announce(now, id, false);
                        let _ = sh.send_up(item);
                    }
                } else {
                    sh.stats.heartbeats.inc();
                }
                sh.staged.timer = Some(self.session.deadline_ms(now.mono_ms, &sh.cfg.session));
            }
            Outcome::Close(reason) => {
                self.begin_close(now, sh, id, reason);
                return true;
            }
        }
        false
    }

    /// Counts a close and starts the lingering close: the ERROR (if one
    /// was staged) goes out, then the write side is shut, and input is
    /// discarded until EOF or the linger timer.
    fn begin_close<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        reason: CloseReason,
    ) {
        self.count_close(now, sh, id, reason);
        if self.state() != State::Closing {
            self.session.begin_closing(now);
        }
        sh.staged.timer = Some(self.session.deadline_ms(now.mono_ms, &sh.cfg.session));
        if sh.tx.is_empty() && !self.has_write() {
            sh.staged.shutdown = true;
        }
    }

    fn count_close<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        reason: CloseReason,
    ) {
        let session = &self.session;
        sh.stats.closed(reason);
        match reason {
            CloseReason::Unauthenticated(f) => sh.stats.login_failed(f),
            CloseReason::LoginTimeout => sh.stats.login_failed(LoginFailure::Timeout),
            CloseReason::BadFrame | CloseReason::TooLarge if !session.logged_in() => {
                sh.stats.login_failed(LoginFailure::BadBody)
            }
            CloseReason::IdleTimeout => sh.stats.expiries.inc(),
            _ => {}
        }
        if session.logged_in() {
            // Rule 10 across a reconnect: the next login of this device
            // starts from this bucket.
            let limits = &sh.cfg.session.rate;
            sh.buckets.closed(
                limits,
                session.uin(),
                session.device(),
                session.send_tat(),
                now.mono_ms as u32,
            );
            sh.stats.sessions_open.dec();
            if sh.link_up {
                let item = Up::Close {
                    session: id.pack(session.epoch()),
                    uin: session.uin(),
                    device: session.device(),
                };
                let _ = sh.send_up(item);
            }
        }
    }

    /// An `Open` (or, after a reconnect, `Reopen`) for this session.
    fn announce(&self, now: Now, id: ConnId, again: bool) -> Up {
        let s = &self.session;
        let (session, uin, device, login_ms) = (
            id.pack(s.epoch()),
            s.uin(),
            s.device(),
            s.login_unix_ms(now),
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

    /// A link to the logic server came up: a live session re-announces
    /// itself (after [`Shared::handle_link_up`]).
    pub fn handle_link_up<U: UpSink>(&mut self, now: Now, sh: &mut Shared<U>, id: ConnId) {
        if self.state() == State::Active {
            let item = self.announce(now, id, true);
            let _ = sh.send_up(item);
        }
    }

    /// The connection's timer fired at `now`.
    pub fn handle_timeout<U: UpSink>(&mut self, now: Now, sh: &mut Shared<U>, id: ConnId) {
        sh.begin(id);
        let was_closing = self.state() == State::Closing;
        match self.session.on_timer(now, &sh.cfg.session, &mut sh.tx) {
            TimerOutcome::Rearm(at) => sh.staged.timer = Some(at),
            // The linger ended; the reason was counted when it began.
            TimerOutcome::Close(_) if was_closing => self.end(now, sh, id, CloseReason::Io),
            TimerOutcome::Close(CloseReason::IdleTimeout) => {
                self.end(now, sh, id, CloseReason::IdleTimeout);
            }
            TimerOutcome::Close(reason) => {
                sh.stats.frames_out.inc();
                self.begin_close(now, sh, id, reason);
            }
        }
    }

    /// A delivery for this slot at `epoch` (after [`Delivery::Write`]):
    /// true if the session is live and the frame is to be written to it.
    pub fn accept_delivery<U: UpSink>(&self, sh: &Shared<U>, epoch: u64) -> bool {
        let live = self.is_live(epoch);
        if live {
            sh.stats.frames_out.inc();
            sh.stats.delivered.inc();
        }
        live
    }

    /// The driver wrote the first `written` bytes of `frames` (accepted
    /// deliveries, in order) straight to the socket; the rest is staged as
    /// output, its first piece possibly the end of a frame partly written.
    /// `written` is 0 when output was already queued.
    pub fn handle_frames_written<'a, U: UpSink>(
        &mut self,
        sh: &mut Shared<U>,
        id: ConnId,
        frames: impl Iterator<Item = &'a [u8]> + Clone,
        written: usize,
    ) {
        sh.begin(id);
        let mut at = 0;
        for f in frames.clone() {
            let end = at + f.len();
            if end > written {
                sh.tx_head = if at < written { end - written } else { 0 };
                break;
            }
            at = end;
        }
        for f in unwritten(frames, written) {
            sh.tx.extend_from_slice(f);
        }
    }

    /// The reply to one of this session's requests was too large for the
    /// client (after [`Delivery::AnswerDropped`]): answered UNAVAILABLE.
    pub fn handle_dropped_reply<U: UpSink>(
        &mut self,
        sh: &mut Shared<U>,
        id: ConnId,
        epoch: u64,
        reply: &[u8],
    ) {
        sh.begin(id);
        if self.is_live(epoch) {
            self.session.answer_dropped_reply(reply, &mut sh.tx);
            sh.stats.frames_out.inc();
        }
    }

    /// The logic tier kicks this session (rule 3): KICK, then close.
    pub fn handle_kick<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        epoch: u64,
        reason: i32,
    ) {
        sh.begin(id);
        if !self.is_live(epoch) {
            return;
        }
        let reason =
            proto::pb::KickReason::try_from(reason).unwrap_or(proto::pb::KickReason::Admin);
        self.session
            .kick(now, &mut sh.tx, reason, "kicked by the logic tier");
        sh.stats.frames_out.inc();
        self.begin_close(now, sh, id, CloseReason::Kicked);
    }

    /// The logic tier ends this session with `frame` (an ERROR).
    pub fn handle_terminate<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        epoch: u64,
        frame: &Bytes,
    ) {
        sh.begin(id);
        if !self.is_live(epoch) {
            return;
        }
        if body_len(frame) > sh.cfg.max_body {
            sh.stats.oversize_dropped.inc();
        } else {
            sh.tx.extend_from_slice(frame);
        }
        sh.stats.frames_out.inc();
        self.begin_close(now, sh, id, CloseReason::BadFrame);
    }

    /// A client frame that never reached the logic tier: answered as rule
    /// 13 says.
    pub fn handle_bounce<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        epoch: u64,
        frame: &Frame,
    ) {
        sh.begin(id);
        if !self.is_live(epoch) {
            return;
        }
        let outcome = self.session.answer_unavailable(now, frame, &mut sh.tx);
        sh.stats.frames_out.inc();
        if let Outcome::Close(reason) = outcome {
            self.begin_close(now, sh, id, reason);
        }
    }

    /// The worker began draining (rule 12). A connection not logged in is
    /// closed at once; true for a live session, which takes part: the
    /// driver schedules it ([`Drain::schedule`]) and hands it the delay
    /// ([`Connection::handle_goaway`]).
    #[must_use]
    pub fn handle_drain_start<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
    ) -> bool {
        sh.begin(id);
        match self.state() {
            State::Active => true,
            State::AwaitLogin => {
                self.end(now, sh, id, CloseReason::Drain);
                false
            }
            State::Closing => false,
        }
    }

    /// GOAWAY with the reconnect delay the drain gave this session.
    pub fn handle_goaway<U: UpSink>(&mut self, sh: &mut Shared<U>, id: ConnId, delay_ms: u32) {
        sh.begin(id);
        self.session.goaway(&mut sh.tx, delay_ms);
        sh.stats.frames_out.inc();
    }

    /// This session's turn in the drain has come: it is closed.
    pub fn handle_drain_close<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        epoch: u64,
    ) {
        sh.begin(id);
        if self.is_live(epoch) {
            self.begin_close(now, sh, id, CloseReason::Drain);
        }
    }

    /// New output to write now: what the last input staged, when nothing
    /// is queued. With output queued, the new output joins the queue
    /// (which goes out on [`Connection::poll_queued`]); a live session
    /// whose queue passes the write budget is a slow consumer: KICKed and
    /// closed.
    #[must_use]
    pub fn poll_transmit<'a, U: UpSink>(
        &mut self,
        now: Now,
        sh: &'a mut Shared<U>,
        id: ConnId,
    ) -> Option<&'a [u8]> {
        if sh.tx.is_empty() {
            sh.tx_head = 0;
            return None;
        }
        if !self.has_write() {
            return Some(&sh.tx);
        }
        sh.tx_head = 0;
        let bufs = self.bufs.as_mut().expect("output is queued");
        bufs.write.extend_from_slice(&sh.tx);
        sh.tx.clear();
        if bufs.write.len() > sh.cfg.write_budget && self.session.state() == State::Active {
            // A slow consumer: what it missed stays in the logic store
            // for SYNC. The queued frames are dropped so that the KICK
            // goes right behind the frame being written and reaches the
            // client before the close.
            bufs.drop_queued_frames();
            self.session.kick(
                now,
                &mut bufs.write,
                proto::pb::KickReason::SlowConsumer,
                "write queue over budget",
            );
            sh.stats.frames_out.inc();
            self.begin_close(now, sh, id, CloseReason::SlowConsumer);
        }
        None
    }

    /// The queued output, to write once the socket is writable.
    #[must_use]
    pub fn poll_queued(&self) -> Option<&[u8]> {
        self.bufs
            .as_ref()
            .filter(|b| !b.write.is_empty())
            .map(|b| &b.write[..])
    }

    /// The driver wrote `written` bytes of what the last poll returned
    /// (`poll_transmit`'s bytes when nothing was queued, else the queue);
    /// `Err` is a socket error, which ends the connection.
    pub fn handle_written<U: UpSink>(
        &mut self,
        now: Now,
        sh: &mut Shared<U>,
        id: ConnId,
        written: Result<usize, ()>,
    ) {
        sh.begin(id);
        let Ok(n) = written else {
            self.end(now, sh, id, CloseReason::Io);
            return;
        };
        let closing = self.state() == State::Closing;
        if let Some(bufs) = self.bufs.as_mut().filter(|b| !b.write.is_empty()) {
            bufs.consumed(n);
            if bufs.write.is_empty() {
                self.free_if_empty();
                sh.staged.shutdown = closing;
                sh.staged.interest = Some(false);
            }
            return;
        }
        if n == sh.tx.len() {
            sh.tx.clear();
            sh.tx_head = 0;
            sh.staged.shutdown = closing;
            return;
        }
        let head = frame_rest(&sh.tx, std::mem::take(&mut sh.tx_head), n);
        let bufs = self.bufs.get_or_insert_with(Box::default);
        bufs.write.extend_from_slice(&sh.tx[n..]);
        bufs.head = head;
        sh.tx.clear();
        sh.staged.shutdown = false;
        sh.staged.interest = Some(true);
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

/// What is left of `frames` once their first `written` bytes are gone.
pub fn unwritten<'a>(
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
