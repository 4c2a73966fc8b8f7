//! One client session as a sans-io state machine (STYLE.md 3): the worker
//! feeds it `handle_*(now, ..)` calls and sends whatever it appends to the
//! output buffer; [`Session::poll_timeout`] says when it next wants
//! `handle_timeout`. Time is microseconds on the worker's clock.
//!
//! Life: `Connecting` -> (TCP up) LOGIN sent, `LoggingIn` -> LOGIN_ACK,
//! `Ready` (heartbeats at the server's interval, or a forced one) ->
//! `Closed`. Every outcome worth counting comes back as an [`Event`].

use bytes::BytesMut;
use prost::Message;
use proto::{Frame, Kind, pb};

/// What the worker should count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Event {
    /// LOGIN_ACK arrived.
    LoggedIn {
        /// TCP connect start to connected.
        connect_us: u64,
        /// LOGIN written to LOGIN_ACK read.
        login_us: u64,
    },
    /// A HEARTBEAT_ACK arrived; `rtt_us` when it answered a timed one.
    HeartbeatAcked { rtt_us: Option<u64> },
    /// Never got to `Ready`.
    Failed(Reason),
    /// Was `Ready`, and the server ended it.
    Lost(Reason),
    /// The gateway is draining: reconnect after this many milliseconds.
    GoAway { after_ms: u32 },
    /// SEND_ACK with this `Status` number, for this channel and id.
    SendAcked {
        status: i32,
        channel: u64,
        msg_id: u64,
    },
    /// JOIN_ACK with this `Status` number.
    Joined { status: i32 },
    /// A PUSH: its channel, id and the send time stamped in its body.
    Pushed {
        channel: u64,
        msg_id: u64,
        stamp_us: Option<u64>,
    },
}

/// Why a session failed or was lost. `as_str` names the report's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ConnectTimeout,
    LoginTimeout,
    /// ERROR from the server, by `ErrorCode` number.
    ServerError(i32),
    Kicked(i32),
    /// The server closed (EOF or reset) with no ERROR, KICK or GOAWAY.
    Closed,
    /// A frame we could not decode.
    BadFrame,
    /// A frame that makes no sense in this state.
    Unexpected,
}

impl Reason {
    /// A stable name for reports.
    pub fn as_str(self) -> String {
        match self {
            Reason::ConnectTimeout => "connect timeout".into(),
            Reason::LoginTimeout => "login timeout".into(),
            Reason::ServerError(c) => match pb::error::ErrorCode::try_from(c) {
                Ok(code) => format!("error {}", code.as_str_name()),
                Err(_) => format!("error {c}"),
            },
            Reason::Kicked(r) => match pb::KickReason::try_from(r) {
                Ok(reason) => format!("kick {}", reason.as_str_name()),
                Err(_) => format!("kick {r}"),
            },
            Reason::Closed => "closed by server".into(),
            Reason::BadFrame => "bad frame from server".into(),
            Reason::Unexpected => "unexpected frame".into(),
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    LoggingIn,
    Ready,
    /// After GOAWAY, waiting for the server to close or for the delay.
    Draining,
    Closed,
}

/// Settings shared by every session of a worker.
#[derive(Debug, Clone)]
pub struct Config {
    /// Heartbeat every this many ms whatever the server says.
    pub forced_heartbeat_ms: Option<u32>,
    pub connect_timeout_us: u64,
    pub login_timeout_us: u64,
    pub network: pb::NetworkType,
}

/// One session. Small on purpose: a worker holds tens of thousands.
#[derive(Debug)]
pub struct Session {
    uin: u64,
    phase: Phase,
    seq: u32,
    started_us: u64,
    connect_us: u64,
    login_sent_us: u64,
    /// Send time of the oldest unanswered timed heartbeat, 0 when none.
    hb_sent_us: u64,
    interval_ms: u32,
    next_hb_us: u64,
}

/// Spreads first heartbeats over one interval, deterministically by uin.
fn jitter(uin: u64, span: u64) -> u64 {
    let mut z = uin.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % span.max(1)
}

impl Session {
    /// A session whose TCP connect started at `now`.
    pub fn new(now: u64, uin: u64) -> Session {
        Session {
            uin,
            phase: Phase::Connecting,
            seq: 0,
            started_us: now,
            connect_us: 0,
            login_sent_us: 0,
            hb_sent_us: 0,
            interval_ms: 0,
            next_hb_us: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn uin(&self) -> u64 {
        self.uin
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// TCP is up: appends LOGIN with `token` to `out`.
    pub fn handle_connected(&mut self, now: u64, cfg: &Config, token: &[u8], out: &mut BytesMut) {
        if self.phase != Phase::Connecting {
            return;
        }
        let login = pb::Login {
            uin: self.uin,
            device_id: 1,
            token: token.to_vec().into(),
            network: cfg.network as i32,
            client_version: String::new(),
        };
        let seq = self.next_seq();
        proto::encode(out, Kind::Login, seq, &login);
        self.connect_us = now.saturating_sub(self.started_us);
        self.login_sent_us = now;
        self.phase = Phase::LoggingIn;
    }

    /// One frame from the server.
    pub fn handle_frame(&mut self, now: u64, cfg: &Config, frame: &Frame) -> Option<Event> {
        match (self.phase, frame.kind) {
            (Phase::LoggingIn, Kind::LoginAck) => {
                let Ok(ack) = pb::LoginAck::decode(frame.body.clone()) else {
                    return Some(self.fail(Reason::BadFrame));
                };
                self.interval_ms = cfg.forced_heartbeat_ms.unwrap_or(ack.heartbeat_ms).max(1);
                let span = u64::from(self.interval_ms) * 1000;
                self.next_hb_us = now + 1 + jitter(self.uin, span);
                self.phase = Phase::Ready;
                Some(Event::LoggedIn {
                    connect_us: self.connect_us,
                    login_us: now.saturating_sub(self.login_sent_us),
                })
            }
            (Phase::Ready | Phase::Draining, Kind::HeartbeatAck) => {
                let rtt_us = (self.hb_sent_us != 0).then(|| now.saturating_sub(self.hb_sent_us));
                if cfg.forced_heartbeat_ms.is_none()
                    && let Ok(ack) = pb::HeartbeatAck::decode(frame.body.clone())
                    && ack.next_heartbeat_ms > 0
                {
                    self.interval_ms = ack.next_heartbeat_ms;
                    if self.hb_sent_us != 0 {
                        self.next_hb_us = self.hb_sent_us + u64::from(ack.next_heartbeat_ms) * 1000;
                    }
                }
                self.hb_sent_us = 0;
                Some(Event::HeartbeatAcked { rtt_us })
            }
            (Phase::Ready | Phase::Draining, Kind::Push) => {
                match pb::Push::decode(frame.body.clone()) {
                    Ok(p) => Some(Event::Pushed {
                        channel: p.channel,
                        msg_id: p.msg_id,
                        stamp_us: crate::chat::stamp(&p.body),
                    }),
                    Err(_) => Some(self.end(Reason::BadFrame)),
                }
            }
            (Phase::Ready | Phase::Draining, Kind::SendAck) => {
                match pb::SendAck::decode(frame.body.clone()) {
                    Ok(a) => Some(Event::SendAcked {
                        status: a.status,
                        channel: a.channel,
                        msg_id: a.msg_id,
                    }),
                    Err(_) => Some(self.end(Reason::BadFrame)),
                }
            }
            (Phase::Ready | Phase::Draining, Kind::JoinAck) => {
                match pb::JoinAck::decode(frame.body.clone()) {
                    Ok(a) => Some(Event::Joined { status: a.status }),
                    Err(_) => Some(self.end(Reason::BadFrame)),
                }
            }
            (Phase::Ready | Phase::Draining, Kind::SyncAck | Kind::LeaveAck) => None,
            (Phase::Ready, Kind::GoAway) => {
                let after_ms = pb::GoAway::decode(frame.body.clone())
                    .map(|g| g.reconnect_after_ms)
                    .unwrap_or(0);
                self.phase = Phase::Draining;
                Some(Event::GoAway { after_ms })
            }
            (_, Kind::Error) => {
                let code = pb::Error::decode(frame.body.clone())
                    .map(|e| e.code)
                    .unwrap_or(0);
                if code == pb::error::ErrorCode::Unavailable as i32 && self.phase == Phase::Ready {
                    return None;
                }
                Some(self.end(Reason::ServerError(code)))
            }
            (_, Kind::Kick) => {
                let reason = pb::Kick::decode(frame.body.clone())
                    .map(|k| k.reason)
                    .unwrap_or(0);
                Some(self.end(Reason::Kicked(reason)))
            }
            (Phase::Closed, _) => None,
            _ => Some(self.end(Reason::Unexpected)),
        }
    }

    /// The server closed the connection (EOF, reset, or a read error).
    pub fn handle_closed(&mut self) -> Option<Event> {
        match self.phase {
            Phase::Closed => None,
            // After GOAWAY the close is expected.
            Phase::Draining => {
                self.phase = Phase::Closed;
                None
            }
            _ => Some(self.end(Reason::Closed)),
        }
    }

    /// A frame from the server did not decode.
    pub fn handle_bad_frame(&mut self) -> Option<Event> {
        (self.phase != Phase::Closed).then(|| self.end(Reason::BadFrame))
    }

    /// When `handle_timeout` is next wanted, if ever.
    pub fn poll_timeout(&self, cfg: &Config) -> Option<u64> {
        match self.phase {
            Phase::Connecting => Some(self.started_us + cfg.connect_timeout_us),
            Phase::LoggingIn => Some(self.login_sent_us + cfg.login_timeout_us),
            Phase::Ready | Phase::Draining => Some(self.next_hb_us),
            Phase::Closed => None,
        }
    }

    /// Time passed: sends a due heartbeat into `out`, or times out.
    pub fn handle_timeout(&mut self, now: u64, cfg: &Config, out: &mut BytesMut) -> Option<Event> {
        match self.phase {
            Phase::Connecting if now >= self.started_us + cfg.connect_timeout_us => {
                Some(self.fail(Reason::ConnectTimeout))
            }
            Phase::LoggingIn if now >= self.login_sent_us + cfg.login_timeout_us => {
                Some(self.fail(Reason::LoginTimeout))
            }
            Phase::Ready | Phase::Draining if now >= self.next_hb_us => {
                let seq = self.next_seq();
                proto::encode(out, Kind::Heartbeat, seq, &pb::Heartbeat {});
                // Acks come in request order: time only the oldest one.
                if self.hb_sent_us == 0 {
                    self.hb_sent_us = now;
                }
                self.next_hb_us = now + u64::from(self.interval_ms) * 1000;
                None
            }
            _ => None,
        }
    }

    /// Appends a SEND of `body` to `channel`. False unless logged in.
    pub fn send(
        &mut self,
        channel: u64,
        client_msg_id: u64,
        body: &[u8],
        out: &mut BytesMut,
    ) -> bool {
        if self.phase != Phase::Ready {
            return false;
        }
        let seq = self.next_seq();
        let req = pb::SendReq {
            channel,
            client_msg_id,
            body: bytes::Bytes::copy_from_slice(body),
        };
        proto::encode(out, Kind::Send, seq, &req);
        true
    }

    /// Appends a JOIN of `channel`. False unless logged in.
    pub fn join(&mut self, channel: u64, out: &mut BytesMut) -> bool {
        if self.phase != Phase::Ready {
            return false;
        }
        let seq = self.next_seq();
        proto::encode(out, Kind::Join, seq, &pb::Join { channel });
        true
    }

    /// We close it ourselves (end of run): no event.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
    }

    fn fail(&mut self, r: Reason) -> Event {
        self.phase = Phase::Closed;
        Event::Failed(r)
    }

    fn end(&mut self, r: Reason) -> Event {
        let was_ready = matches!(self.phase, Phase::Ready | Phase::Draining);
        self.phase = Phase::Closed;
        if was_ready {
            Event::Lost(r)
        } else {
            Event::Failed(r)
        }
    }
}

#[cfg(test)]
mod tests;
