//! One client session's protocol state, sans-io (PROTOCOL.md "Session
//! rules").
//!
//! [`Session`] is a plain 40-byte struct: the event loop feeds it decoded
//! frames and timer firings with the time passed in, and it writes its
//! replies into the caller's output buffer and returns what the loop must
//! do next ([`Outcome`], [`TimerOutcome`]). It owns no socket, no buffer and
//! no clock, so every rule is unit-tested here without a network.
//!
//! Times are stored as `u32` milliseconds of the worker's monotonic clock,
//! wrapping every 49.7 days, and compared by wrapping difference. That is
//! sound because each stored time is refreshed at least once per idle
//! timeout (the session is closed otherwise); the rate limiter guards its
//! own (see `ratelimit`).

use bytes::BytesMut;
use prost::Message;
use proto::pb::{self, error::ErrorCode};
use proto::request::{BadRequest, decode_body};
use proto::{DecodeError, Frame, Kind, TokenError, TokenKey};

use crate::heartbeat::HeartbeatPolicy;
use crate::ratelimit::{self, Bucket, Limits};

/// Settings every session of a worker shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub heartbeat: HeartbeatPolicy,
    /// Per-session rate limits (SEND, JOIN, LEAVE, SYNC).
    pub rate: Limits,
    /// Rule 1: LOGIN must arrive within this long of the accept.
    pub login_timeout_ms: u32,
    /// After an ERROR that closes, how long to keep draining the client's
    /// input before the socket is closed, so the ERROR is not lost to a
    /// reset.
    pub linger_ms: u32,
    pub key: TokenKey,
    /// High bits of every `LoginAck.session_id` this worker hands out
    /// (gateway instance and worker index); the low 32 are the epoch.
    pub session_id_prefix: u64,
}

/// The time, as the event loop read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (the worker's clock; the wheel's time).
    pub mono_ms: u64,
    /// Wall-clock Unix milliseconds, for token expiry and `server_time_ms`.
    pub unix_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    AwaitLogin,
    Active,
    /// An ERROR was sent; input is discarded until EOF or the linger ends.
    Closing,
}

/// Why a connection ended, and whose fault it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed its side.
    ClientEof,
    /// Rule 4: nothing arrived for the idle timeout.
    IdleTimeout,
    /// Rule 1: no LOGIN in time.
    LoginTimeout,
    /// Rule 1: bad token, or a first frame other than LOGIN.
    Unauthenticated(LoginFailure),
    /// Rule 11: bad version, unknown kind, undecodable body, second LOGIN.
    BadFrame,
    /// Rule 11: `body_len` over the maximum.
    TooLarge,
    /// A socket error.
    Io,
    /// Rule 3: a newer login of the same (uin, device) took over.
    Kicked,
    /// The write queue went over its budget.
    SlowConsumer,
    /// Rule 12: the gateway drained.
    Drain,
}

/// Every close reason with its metrics label, in label order: the one
/// table of them (`metrics` counts by position in it; every login failure
/// shares the `unauthenticated` row, whose detail is its own label).
pub const CLOSE_REASONS: [(CloseReason, &str); 10] = [
    (CloseReason::ClientEof, "client_eof"),
    (CloseReason::IdleTimeout, "idle_timeout"),
    (CloseReason::LoginTimeout, "login_timeout"),
    (
        CloseReason::Unauthenticated(LoginFailure::BadToken),
        "unauthenticated",
    ),
    (CloseReason::BadFrame, "bad_frame"),
    (CloseReason::TooLarge, "too_large"),
    (CloseReason::Io, "io_error"),
    (CloseReason::Kicked, "kicked"),
    (CloseReason::SlowConsumer, "slow_consumer"),
    (CloseReason::Drain, "drain"),
];

impl CloseReason {
    /// This reason's row in [`CLOSE_REASONS`].
    pub fn index(self) -> usize {
        match self {
            CloseReason::ClientEof => 0,
            CloseReason::IdleTimeout => 1,
            CloseReason::LoginTimeout => 2,
            CloseReason::Unauthenticated(_) => 3,
            CloseReason::BadFrame => 4,
            CloseReason::TooLarge => 5,
            CloseReason::Io => 6,
            CloseReason::Kicked => 7,
            CloseReason::SlowConsumer => 8,
            CloseReason::Drain => 9,
        }
    }

    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        CLOSE_REASONS[self.index()].1
    }
}

/// Why a login was refused (metrics label and log detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginFailure {
    NotLoginFirst,
    BadToken,
    Expired,
    BadBody,
    Timeout,
}

impl LoginFailure {
    pub const ALL: [LoginFailure; 5] = [
        LoginFailure::NotLoginFirst,
        LoginFailure::BadToken,
        LoginFailure::Expired,
        LoginFailure::BadBody,
        LoginFailure::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoginFailure::NotLoginFirst => "not_login_first",
            LoginFailure::BadToken => "bad_token",
            LoginFailure::Expired => "expired",
            LoginFailure::BadBody => "bad_body",
            LoginFailure::Timeout => "timeout",
        }
    }
}

/// What the event loop must do after a frame.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing beyond writing what was put in the output buffer.
    Continue,
    /// The frame was a heartbeat.
    Heartbeat,
    /// The idle deadline moved earlier: re-arm the timer now.
    HeartbeatRearm,
    /// LOGIN succeeded: announce the session and arm the idle timer.
    LoggedIn,
    /// Hand the frame to the logic tier unchanged.
    Forward,
    /// An ERROR was written (if the reason calls for one): flush and close.
    Close(CloseReason),
}

/// What the event loop must do when the session's timer fires.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// Not yet: arm again for this time (ms, monotonic).
    Rearm(u64),
    /// Close now (an ERROR may have been written).
    Close(CloseReason),
}

/// A client session. Kept small: it lives in every connection slot (40
/// bytes: see `session_is_small`).
#[derive(Debug, Clone)]
pub struct Session {
    uin: u64,
    device: u32,
    epoch: u32,
    /// Last frame from the client (the accept, before LOGIN; the start of
    /// the linger while closing).
    last_seen: u32,
    /// The previous heartbeat (or the login).
    last_hb: u32,
    /// The current heartbeat interval (ms).
    hb_ms: u32,
    /// Rate limiter state (see `ratelimit`).
    tat: u32,
    /// When LOGIN succeeded (monotonic ms, like the other times), but never
    /// more than [`LOGIN_AGE_CAP_MS`] ago: see [`Session::login_unix_ms`].
    login: u32,
    /// The older observed heartbeat interval (ms); 0 before the first.
    prev_iv: U24,
    phase: Phase,
}

/// How old a login is at most said to be (2^30 ms, 12.4 days; see
/// [`Session::login_unix_ms`]). Any idle timeout a `u32` clock allows is
/// far below 2^31 - 2^30 ms, so a capped login never wraps.
const LOGIN_AGE_CAP_MS: u32 = 1 << 30;

/// A 24-bit unsigned integer in three bytes: an observed heartbeat interval
/// in ms, saturating at 16,777,215 ms (4.66 h). An interval can only be
/// that long with an idle timeout over 4.66 h; it then counts as 4.66 h.
/// (Three bytes, not four, keep [`Session`] at 40 bytes.)
#[derive(Debug, Clone, Copy, Default)]
struct U24([u8; 3]);

impl U24 {
    const MAX: u32 = (1 << 24) - 1;

    fn new(v: u32) -> U24 {
        let [_, a, b, c] = v.min(Self::MAX).to_be_bytes();
        U24([a, b, c])
    }

    fn get(self) -> u32 {
        let [a, b, c] = self.0;
        u32::from_be_bytes([0, a, b, c])
    }
}

/// [`State`] and whether LOGIN ever succeeded, in one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitLogin,
    Active,
    /// Closing before any LOGIN succeeded.
    Closing,
    /// Closing after a LOGIN succeeded.
    ClosingLoggedIn,
}

fn put_error(out: &mut BytesMut, seq: u32, code: ErrorCode, message: &str) {
    let msg = pb::Error {
        code: code as i32,
        message: message.to_owned(),
    };
    proto::encode(out, Kind::Error, seq, &msg);
}

impl Session {
    /// A connection just accepted at `now_ms`, waiting for LOGIN.
    pub fn new(now_ms: u64, epoch: u32) -> Session {
        Session {
            uin: 0,
            device: 0,
            epoch,
            last_seen: now_ms as u32,
            last_hb: now_ms as u32,
            hb_ms: 0,
            tat: now_ms as u32,
            login: now_ms as u32,
            prev_iv: U24::default(),
            phase: Phase::AwaitLogin,
        }
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::AwaitLogin => State::AwaitLogin,
            Phase::Active => State::Active,
            Phase::Closing | Phase::ClosingLoggedIn => State::Closing,
        }
    }
    /// LOGIN succeeded on this connection (it may be closing now).
    pub fn logged_in(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::ClosingLoggedIn)
    }
    /// When LOGIN succeeded, as Unix milliseconds read off `now`: what
    /// `Open` and `Reopen` tell the logic tier, which keeps the newest
    /// login of a (uin, device) (rule 3). A login more than
    /// [`LOGIN_AGE_CAP_MS`] (12.4 days) old is reported as exactly that
    /// old: still older than every login made since, which is all the
    /// comparison needs, and it keeps the stored time within a wrap.
    pub fn login_unix_ms(&self, now: Now) -> u64 {
        let age = (now.mono_ms as u32)
            .wrapping_sub(self.login)
            .min(LOGIN_AGE_CAP_MS);
        now.unix_ms.saturating_sub(u64::from(age))
    }
    pub fn uin(&self) -> u64 {
        self.uin
    }
    pub fn device(&self) -> u32 {
        self.device
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    /// The SEND bucket's state (see `ratelimit`), kept past the session.
    pub fn send_tat(&self) -> u32 {
        self.tat
    }
    /// The current heartbeat interval (ms); 0 before LOGIN.
    pub fn heartbeat_ms(&self) -> u32 {
        self.hb_ms
    }

    /// When the session's timer should next fire (monotonic ms).
    pub fn deadline_ms(&self, now_ms: u64, cfg: &SessionConfig) -> u64 {
        let timeout = match self.state() {
            State::AwaitLogin => cfg.login_timeout_ms,
            State::Active => cfg.heartbeat.idle_ms(self.hb_ms),
            State::Closing => cfg.linger_ms,
        };
        let elapsed = (now_ms as u32).wrapping_sub(self.last_seen);
        now_ms + u64::from(timeout.saturating_sub(elapsed))
    }

    /// The session's timer fired at `now`.
    pub fn on_timer(&mut self, now: Now, cfg: &SessionConfig, out: &mut BytesMut) -> TimerOutcome {
        let deadline = self.deadline_ms(now.mono_ms, cfg);
        if deadline > now.mono_ms {
            return TimerOutcome::Rearm(deadline);
        }
        match self.state() {
            State::AwaitLogin => {
                put_error(
                    out,
                    0,
                    ErrorCode::LoginTimeout,
                    "no LOGIN within the login timeout",
                );
                self.begin_closing(now);
                TimerOutcome::Close(CloseReason::LoginTimeout)
            }
            State::Active => TimerOutcome::Close(CloseReason::IdleTimeout),
            // The linger ended; the reason was counted when it began.
            State::Closing => TimerOutcome::Close(CloseReason::Io),
        }
    }

    /// Enters the closing state: input is discarded from now on.
    pub fn begin_closing(&mut self, now: Now) {
        self.phase = if self.logged_in() {
            Phase::ClosingLoggedIn
        } else {
            Phase::Closing
        };
        self.last_seen = now.mono_ms as u32;
    }

    /// The decoder refused a frame header (rule 11): writes the ERROR.
    pub fn on_decode_error(
        &mut self,
        now: Now,
        err: DecodeError,
        out: &mut BytesMut,
    ) -> CloseReason {
        let (code, reason) = match err {
            DecodeError::TooLarge { .. } => (ErrorCode::TooLarge, CloseReason::TooLarge),
            _ => (ErrorCode::BadFrame, CloseReason::BadFrame),
        };
        put_error(out, err.seq(), code, &err.to_string());
        self.begin_closing(now);
        reason
    }

    fn refuse(
        &mut self,
        now: Now,
        out: &mut BytesMut,
        seq: u32,
        why: CloseReason,
        message: &str,
    ) -> Outcome {
        let code = match why {
            CloseReason::Unauthenticated(_) => ErrorCode::Unauthenticated,
            CloseReason::TooLarge => ErrorCode::TooLarge,
            _ => ErrorCode::BadFrame,
        };
        put_error(out, seq, code, message);
        self.begin_closing(now);
        Outcome::Close(why)
    }

    /// A whole frame arrived at `now`. `backend_up` says whether the logic
    /// tier is reachable (rule 13); `buckets` is the gateway's rate-limit
    /// table (JOIN, LEAVE and SYNC buckets, and SEND's across a reconnect).
    pub fn handle_frame(
        &mut self,
        now: Now,
        cfg: &SessionConfig,
        backend_up: bool,
        buckets: &ratelimit::Shared,
        frame: &Frame,
        out: &mut BytesMut,
    ) -> Outcome {
        match self.state() {
            State::Closing => Outcome::Continue,
            State::AwaitLogin => self.handle_login(now, cfg, buckets, frame, out),
            State::Active => {
                let t = now.mono_ms as u32;
                self.last_seen = t;
                if t.wrapping_sub(self.login) > LOGIN_AGE_CAP_MS {
                    // Every live session sends a frame at least once per
                    // idle timeout, so this keeps the login within a wrap.
                    self.login = t.wrapping_sub(LOGIN_AGE_CAP_MS);
                }
                self.handle_active(now, cfg, backend_up, buckets, frame, out)
            }
        }
    }

    fn handle_login(
        &mut self,
        now: Now,
        cfg: &SessionConfig,
        buckets: &ratelimit::Shared,
        frame: &Frame,
        out: &mut BytesMut,
    ) -> Outcome {
        let seq = frame.seq;
        if frame.kind != Kind::Login {
            let why = CloseReason::Unauthenticated(LoginFailure::NotLoginFirst);
            return self.refuse(now, out, seq, why, "the first frame must be LOGIN");
        }
        let login = match decode_body::<pb::Login>(frame.kind, frame.body.clone()) {
            Ok(login) => login,
            Err(e) => return self.refuse(now, out, seq, CloseReason::BadFrame, &e.to_string()),
        };
        if let Err(e) = cfg.key.verify(
            &login.token,
            login.uin,
            login.device_id,
            now.unix_ms / 1_000,
        ) {
            let failure = match e {
                TokenError::Expired { .. } => LoginFailure::Expired,
                _ => LoginFailure::BadToken,
            };
            return self.refuse(
                now,
                out,
                seq,
                CloseReason::Unauthenticated(failure),
                &e.to_string(),
            );
        }
        let t = now.mono_ms as u32;
        self.uin = login.uin;
        self.device = login.device_id;
        self.phase = Phase::Active;
        self.login = t;
        self.last_seen = t;
        self.last_hb = t;
        self.prev_iv = U24::default();
        // What the last session of this (uin, device) left (rule 10 across
        // a reconnect), or a full bucket.
        self.tat = buckets.login(self.uin, self.device, t);
        self.hb_ms = cfg.heartbeat.starting_ms(login.network);
        let ack = pb::LoginAck {
            heartbeat_ms: self.hb_ms,
            idle_timeout_ms: cfg.heartbeat.idle_ms(self.hb_ms),
            server_time_ms: now.unix_ms,
            session_id: cfg.session_id_prefix | u64::from(self.epoch),
        };
        proto::encode(out, Kind::LoginAck, seq, &ack);
        Outcome::LoggedIn
    }

    fn handle_active(
        &mut self,
        now: Now,
        cfg: &SessionConfig,
        backend_up: bool,
        buckets: &ratelimit::Shared,
        frame: &Frame,
        out: &mut BytesMut,
    ) -> Outcome {
        let seq = frame.seq;
        match frame.kind {
            Kind::Heartbeat => {
                if let Err(e) = decode_body::<pb::Heartbeat>(frame.kind, frame.body.clone()) {
                    return self.refuse(now, out, seq, CloseReason::BadFrame, &e.to_string());
                }
                let outcome = self.on_heartbeat(now, cfg);
                let ack = pb::HeartbeatAck {
                    next_heartbeat_ms: self.hb_ms,
                    idle_timeout_ms: cfg.heartbeat.idle_ms(self.hb_ms),
                };
                proto::encode(out, Kind::HeartbeatAck, seq, &ack);
                outcome
            }
            Kind::Login => self.refuse(now, out, seq, CloseReason::BadFrame, "already logged in"),
            Kind::Send => {
                if !cfg.rate.send.allow(&mut self.tat, now.mono_ms as u32) {
                    return self.answer_send(now, out, frame, pb::Status::RateLimited);
                }
                if backend_up {
                    return Outcome::Forward;
                }
                self.answer_unavailable(now, frame, out)
            }
            Kind::Sync | Kind::Join | Kind::Leave => {
                let bucket = match frame.kind {
                    Kind::Sync => Bucket::Sync,
                    Kind::Join => Bucket::Join,
                    _ => Bucket::Leave,
                };
                let t = now.mono_ms as u32;
                if !buckets.allow(&cfg.rate, bucket, self.uin, self.device, t) {
                    return self.answer_status(now, frame, out, pb::Status::RateLimited);
                }
                if backend_up {
                    return Outcome::Forward;
                }
                self.answer_unavailable(now, frame, out)
            }
            // A server-to-client kind sent by a client.
            kind => {
                let why = BadRequest::NotARequest(kind).to_string();
                self.refuse(now, out, seq, CloseReason::BadFrame, &why)
            }
        }
    }

    /// Rule 13: the answer to SEND, SYNC, JOIN or LEAVE while the logic
    /// tier is unreachable (also for a frame the uplink could not send).
    pub fn answer_unavailable(&mut self, now: Now, frame: &Frame, out: &mut BytesMut) -> Outcome {
        self.answer_status(now, frame, out, pb::Status::Unavailable)
    }

    /// Answers a SEND, SYNC, JOIN or LEAVE the gateway refuses itself with
    /// `status` (`UNAVAILABLE` or `RATE_LIMITED`). SYNC_ACK has no status:
    /// a refused SYNC gets ERROR(`UNAVAILABLE`), which does not close, and
    /// the message says which.
    fn answer_status(
        &mut self,
        now: Now,
        frame: &Frame,
        out: &mut BytesMut,
        status: pb::Status,
    ) -> Outcome {
        let seq = frame.seq;
        match frame.kind {
            Kind::Send => self.answer_send(now, out, frame, status),
            Kind::Join => match decode_body::<pb::Join>(frame.kind, frame.body.clone()) {
                Ok(join) => {
                    let ack = pb::JoinAck {
                        status: status as i32,
                        channel: join.channel,
                        newest_msg_id: 0,
                    };
                    proto::encode(out, Kind::JoinAck, seq, &ack);
                    Outcome::Continue
                }
                Err(e) => self.refuse(now, out, seq, CloseReason::BadFrame, &e.to_string()),
            },
            Kind::Leave => match decode_body::<pb::Leave>(frame.kind, frame.body.clone()) {
                Ok(leave) => {
                    let ack = pb::LeaveAck {
                        status: status as i32,
                        channel: leave.channel,
                    };
                    proto::encode(out, Kind::LeaveAck, seq, &ack);
                    Outcome::Continue
                }
                Err(e) => self.refuse(now, out, seq, CloseReason::BadFrame, &e.to_string()),
            },
            _ => {
                let message = if status == pb::Status::RateLimited {
                    "rate limited: retry later"
                } else {
                    "the logic tier is unreachable"
                };
                put_error(out, seq, ErrorCode::Unavailable, message);
                Outcome::Continue
            }
        }
    }

    /// A reply from the logic tier (`reply`, an encoded frame) was too
    /// large for the client (over the max body) and is dropped: writes the
    /// rule-13 UNAVAILABLE answer to the request it answered, keeping what
    /// the request's own answer would echo (channel, client_msg_id). Only
    /// the reply's small leading fields are needed; a body that does not
    /// decode still gets an answer, without them.
    pub fn answer_dropped_reply(&self, reply: &[u8], out: &mut BytesMut) {
        let (kind, seq) = match reply.get(..proto::codec::HEADER_LEN) {
            Some(h) => (h[5], u32::from_be_bytes([h[8], h[9], h[10], h[11]])),
            None => return,
        };
        let body = &reply[proto::codec::HEADER_LEN..];
        let unavailable = pb::Status::Unavailable as i32;
        match Kind::from_u8(kind) {
            Some(Kind::SendAck) => {
                let got = pb::SendAck::decode(body).unwrap_or_default();
                let ack = pb::SendAck {
                    status: unavailable,
                    channel: got.channel,
                    msg_id: 0,
                    client_msg_id: got.client_msg_id,
                };
                proto::encode(out, Kind::SendAck, seq, &ack);
            }
            Some(Kind::JoinAck) => {
                let got = pb::JoinAck::decode(body).unwrap_or_default();
                let ack = pb::JoinAck {
                    status: unavailable,
                    channel: got.channel,
                    newest_msg_id: 0,
                };
                proto::encode(out, Kind::JoinAck, seq, &ack);
            }
            Some(Kind::LeaveAck) => {
                let got = pb::LeaveAck::decode(body).unwrap_or_default();
                let ack = pb::LeaveAck {
                    status: unavailable,
                    channel: got.channel,
                };
                proto::encode(out, Kind::LeaveAck, seq, &ack);
            }
            // SYNC_ACK (the one reply that can grow) and anything else.
            _ => put_error(
                out,
                seq,
                ErrorCode::Unavailable,
                "the answer was larger than the max body",
            ),
        }
    }

    /// Answers a SEND the gateway refuses itself. Only this refusal path
    /// decodes the body (for the channel and client_msg_id the ack echoes);
    /// `body` is a `Bytes` slice of the frame, so nothing is copied.
    fn answer_send(
        &mut self,
        now: Now,
        out: &mut BytesMut,
        frame: &Frame,
        status: pb::Status,
    ) -> Outcome {
        let req = match decode_body::<pb::SendReq>(frame.kind, frame.body.clone()) {
            Ok(req) => req,
            Err(e) => {
                return self.refuse(now, out, frame.seq, CloseReason::BadFrame, &e.to_string());
            }
        };
        let ack = pb::SendAck {
            status: status as i32,
            channel: req.channel,
            msg_id: 0,
            client_msg_id: req.client_msg_id,
        };
        proto::encode(out, Kind::SendAck, frame.seq, &ack);
        Outcome::Continue
    }

    /// Rule 5: adapt the interval from the two latest observed intervals.
    fn on_heartbeat(&mut self, now: Now, cfg: &SessionConfig) -> Outcome {
        let t = now.mono_ms as u32;
        let iv2 = t.wrapping_sub(self.last_hb).max(1);
        self.last_hb = t;
        let before = cfg.heartbeat.idle_ms(self.hb_ms);
        let prev_iv = self.prev_iv.get();
        if prev_iv != 0 {
            self.hb_ms = cfg.heartbeat.next_ms(self.hb_ms, prev_iv, iv2);
        }
        self.prev_iv = U24::new(iv2);
        if cfg.heartbeat.idle_ms(self.hb_ms) < before {
            Outcome::HeartbeatRearm
        } else {
            Outcome::Heartbeat
        }
    }

    /// Rule 3 (or a slow consumer): writes KICK and starts closing.
    pub fn kick(&mut self, now: Now, out: &mut BytesMut, reason: pb::KickReason, detail: &str) {
        let msg = pb::Kick {
            reason: reason as i32,
            detail: detail.to_owned(),
        };
        proto::encode(out, Kind::Kick, 0, &msg);
        self.begin_closing(now);
    }

    /// Rule 12: the GOAWAY a draining gateway sends.
    pub fn goaway(&self, out: &mut BytesMut, reconnect_after_ms: u32) {
        proto::encode(out, Kind::GoAway, 0, &pb::GoAway { reconnect_after_ms });
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
