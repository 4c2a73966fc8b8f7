//! The gateway <-> logic link protocol, sans-io (like [`crate::codec`]).
//!
//! A gateway process keeps one or a few TCP connections to the logic
//! server. Over them it announces sessions and forwards the client frames it
//! does not answer itself; the logic server sends back frames to write to
//! sessions, and kicks. The envelope is a hand-written fixed binary layout
//! (this is the hot path); client frames ride inside as opaque bytes and are
//! never re-encoded on the way.
//!
//! # Framing
//!
//! Every link frame is a 4-byte big-endian length followed by that many
//! bytes: a 1-byte link kind, then the kind's fields, all big-endian. The
//! length counts the kind byte and the fields, not itself. Many frames may
//! share one write (that is how batching works: a sender appends frames to
//! one buffer and writes it with one syscall), and a frame may be split
//! across any number of reads.
//!
//! | offset | size | field  | meaning |
//! |-------:|-----:|--------|---------|
//! | 0      | 4    | `len`  | bytes that follow (kind + fields), at least 1 |
//! | 4      | 1    | `kind` | link kind, see below |
//! | 5      | len-1| fields | per kind |
//!
//! A [`SessionRef`] is 16 bytes: `conn` u64 then `epoch` u64. `conn` is
//! gateway-local (the gateway packs its worker index and slab key in it);
//! `epoch` is unique per login on that gateway and works as a fencing token:
//! a notice carrying an older epoch never affects a newer session.
//!
//! # Gateway -> logic
//!
//! | kind | name     | fields (after the kind byte) | size |
//! |-----:|----------|------------------------------|-----:|
//! | 0x01 | `Hello`  | `gateway_id` u64, `version` u16 (= [`LINK_VERSION`]), `instance` u64 | 18 |
//! | 0x02 | `Open`   | session 16, `uin` u64, `device` u32, `login_ms` u64 | 36 |
//! | 0x03 | `Close`  | session 16, `uin` u64, `device` u32 | 28 |
//! | 0x04 | `Client` | session 16, `uin` u64, `device` u32, client frame (rest) | 28 + n |
//! | 0x05 | `Reopen` | session 16, `uin` u64, `device` u32, `login_ms` u64 | 36 |
//!
//! `Hello` is the first frame on every link connection. `gateway_id` and
//! `instance` are both drawn from the OS's CSPRNG at each gateway process
//! start, so a restarted gateway is a new gateway: `gateway_id` names the
//! gateway in `SessionRef`-bearing traffic, and `instance` lets the logic
//! server tell a second link connection of the same process (same id, same
//! instance: accepted) from another process claiming an id it already has
//! (same id, different instance: refused, and the refusal logged as an
//! error). `Open` announces a fresh login and `Reopen` re-announces a
//! session that was already logged in (for every live session after a link
//! reconnect). Both carry `login_ms`, the Unix time in milliseconds of the
//! login by the gateway's clock, and the logic server keeps, per (`uin`,
//! `device`), the session with the newest login, whatever order the
//! announcements arrive in (PROTOCOL.md rule 3); the others are kicked
//! wherever they live. Between equal login times an `Open` beats the
//! session held and a `Reopen` loses to it. Ordering logins across gateways
//! by their clocks needs the gateways' clocks in sync (NTP): two logins
//! closer together than the clocks' skew may be ordered either way.
//! `Close` says the session ended. `Client` carries one whole
//! client frame (12-byte client header and body) of kind SEND, SYNC, JOIN
//! or LEAVE, undecoded; replies echo its `seq`. A gateway with several link
//! connections sends all notices of one session over the same connection,
//! so that they stay in order.
//!
//! # Logic -> gateway
//!
//! | kind | name        | fields (after the kind byte) | size |
//! |-----:|-------------|------------------------------|-----:|
//! | 0x81 | `Deliver`   | `count` u32, `count` x session 16, client frame (rest) | 4 + 16 count + n |
//! | 0x82 | `Kick`      | session 16, `reason` i32 (`pb::KickReason`) | 20 |
//! | 0x83 | `Terminate` | session 16, client frame (rest) | 16 + n |
//!
//! `Deliver` carries one complete client frame (header and body, encoded
//! once) to write to each listed session; it answers a `Client` frame (one
//! target) and fans PUSHes out (one `Deliver` per gateway holding
//! recipients, at most [`MAX_DELIVER_TARGETS`] targets each). `Kick` asks
//! the gateway to send KICK(`reason`) and close the session. `Terminate`
//! asks it to write the given frame (an ERROR) and close the session, for a
//! client frame the logic server finds malformed (PROTOCOL.md rule 11). The
//! gateway ignores targets whose epoch no longer matches a live session.
//!
//! # Either way
//!
//! | kind | name   | fields | size |
//! |-----:|--------|--------|-----:|
//! | 0x10 | `Ping` | `nonce` u64 | 8 |
//! | 0x11 | `Pong` | `nonce` u64 | 8 |
//!
//! A `Ping` is answered by a `Pong` with the same nonce, by either side at
//! any time after `Hello`; a receiver must answer every one. The gateway
//! sends a `Ping` right behind its `Hello` and takes the link for up only
//! when the `Pong` comes back (so a server that refuses the `Hello`, or
//! is stopped, is never taken for up); then it pings at a fixed interval
//! and closes the link when nothing (no `Pong`, no other frame) has come
//! back for a few intervals (the gateway's `ping_interval_ms` and
//! `missed_pongs`, 1 s and 3 by default). Ping and Pong date from the
//! first link version, so every peer that passes the version check
//! answers them; a peer that does not is closed after those few intervals
//! and dialled with a growing backoff, never in a loop.
//!
//! The `seq` of a forwarded client frame is the gateway's own *link seq*
//! (unique among its requests in flight, never 0), not the client's: the
//! logic server echoes it on the answer as it would any seq, and the
//! gateway puts the client's seq back. The logic server must treat `seq`
//! as opaque.
//!
//! # Use
//!
//! ```
//! use bytes::BytesMut;
//! use proto::link::{self, LinkMsg, SessionRef};
//!
//! // Gateway side: append frames to one buffer, write it with one syscall.
//! let mut out = BytesMut::new();
//! link::encode_hello(&mut out, 0x5eed, 0x1d);
//! let session = SessionRef { conn: 3, epoch: 17 };
//! link::encode_open(&mut out, session, 42, 1, 1_700_000_000_000);
//!
//! // Receiving side: feed what was read, take whole frames off the front.
//! let mut rx = out;
//! let mut got = Vec::new();
//! while let Some(msg) = link::decode(&mut rx, link::DEFAULT_MAX_LINK_FRAME)? {
//!     got.push(msg);
//! }
//! assert_eq!(
//!     got[1],
//!     LinkMsg::Open { session, uin: 42, device: 1, login_ms: 1_700_000_000_000 }
//! );
//! # Ok::<(), link::LinkError>(())
//! ```
//!
//! # Errors
//!
//! [`decode`] refuses a frame whose length exceeds the caller's maximum, is
//! 0, names an unknown kind, does not match its kind's size, or (in `Hello`)
//! names another version. All are the peer's fault, and the only sound
//! reaction is to close the link.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the length prefix plus the kind byte.
pub const LINK_HEADER_LEN: usize = 5;
/// The link protocol version carried in `Hello`. Version 2 added
/// `instance` to `Hello` and `login_ms` to `Open` and `Reopen`.
pub const LINK_VERSION: u16 = 2;
/// A sane default for the largest link frame (`len` field) a peer accepts:
/// a client frame of the maximum size plus [`MAX_DELIVER_TARGETS`] targets
/// fit with room to spare.
pub const DEFAULT_MAX_LINK_FRAME: usize = 1 << 20;
/// The most targets a sender puts in one `Deliver`; a larger fan-out is
/// split into several frames carrying the same client frame.
pub const MAX_DELIVER_TARGETS: usize = 16_384;

/// Size of an encoded [`SessionRef`].
const SESSION_LEN: usize = 16;
/// Size of session + uin + device.
const SESSION_FIELDS_LEN: usize = SESSION_LEN + 8 + 4;
/// Size of session + uin + device + login_ms (`Open`, `Reopen`).
const ANNOUNCE_LEN: usize = SESSION_FIELDS_LEN + 8;
/// Size of `Hello`'s fields.
const HELLO_LEN: usize = 8 + 2 + 8;

/// One session on one gateway: its gateway-local connection id and its
/// login epoch (the fencing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionRef {
    pub conn: u64,
    pub epoch: u64,
}

impl SessionRef {
    fn put(&self, out: &mut impl BufMut) {
        out.put_u64(self.conn);
        out.put_u64(self.epoch);
    }

    fn get(b: &mut Bytes) -> SessionRef {
        SessionRef {
            conn: b.get_u64(),
            epoch: b.get_u64(),
        }
    }
}

/// Link kind bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LinkKind {
    Hello = 0x01,
    Open = 0x02,
    Close = 0x03,
    Client = 0x04,
    Reopen = 0x05,
    Ping = 0x10,
    Pong = 0x11,
    Deliver = 0x81,
    Kick = 0x82,
    Terminate = 0x83,
}

impl LinkKind {
    /// The kind for a byte, or `None` if the link protocol defines none.
    pub const fn from_u8(b: u8) -> Option<LinkKind> {
        Some(match b {
            0x01 => LinkKind::Hello,
            0x02 => LinkKind::Open,
            0x03 => LinkKind::Close,
            0x04 => LinkKind::Client,
            0x05 => LinkKind::Reopen,
            0x10 => LinkKind::Ping,
            0x11 => LinkKind::Pong,
            0x81 => LinkKind::Deliver,
            0x82 => LinkKind::Kick,
            0x83 => LinkKind::Terminate,
            _ => return None,
        })
    }
}

/// One decoded link frame. Byte payloads are slices of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMsg {
    Hello {
        gateway_id: u64,
        instance: u64,
    },
    Open {
        session: SessionRef,
        uin: u64,
        device: u32,
        login_ms: u64,
    },
    Close {
        session: SessionRef,
        uin: u64,
        device: u32,
    },
    Client {
        session: SessionRef,
        uin: u64,
        device: u32,
        frame: Bytes,
    },
    Reopen {
        session: SessionRef,
        uin: u64,
        device: u32,
        login_ms: u64,
    },
    Deliver {
        targets: Vec<SessionRef>,
        frame: Bytes,
    },
    Kick {
        session: SessionRef,
        reason: i32,
    },
    Terminate {
        session: SessionRef,
        frame: Bytes,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
}

impl LinkMsg {
    /// The kind byte this message is sent with.
    pub fn kind(&self) -> LinkKind {
        match self {
            LinkMsg::Hello { .. } => LinkKind::Hello,
            LinkMsg::Open { .. } => LinkKind::Open,
            LinkMsg::Close { .. } => LinkKind::Close,
            LinkMsg::Client { .. } => LinkKind::Client,
            LinkMsg::Reopen { .. } => LinkKind::Reopen,
            LinkMsg::Deliver { .. } => LinkKind::Deliver,
            LinkMsg::Kick { .. } => LinkKind::Kick,
            LinkMsg::Terminate { .. } => LinkKind::Terminate,
            LinkMsg::Ping { .. } => LinkKind::Ping,
            LinkMsg::Pong { .. } => LinkKind::Pong,
        }
    }

    /// Appends this message as one link frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            LinkMsg::Hello {
                gateway_id,
                instance,
            } => encode_hello(out, *gateway_id, *instance),
            LinkMsg::Open {
                session,
                uin,
                device,
                login_ms,
            } => encode_open(out, *session, *uin, *device, *login_ms),
            LinkMsg::Close {
                session,
                uin,
                device,
            } => encode_close(out, *session, *uin, *device),
            LinkMsg::Client {
                session,
                uin,
                device,
                frame,
            } => encode_client(out, *session, *uin, *device, frame),
            LinkMsg::Reopen {
                session,
                uin,
                device,
                login_ms,
            } => encode_reopen(out, *session, *uin, *device, *login_ms),
            LinkMsg::Deliver { targets, frame } => encode_deliver(out, targets, frame),
            LinkMsg::Kick { session, reason } => encode_kick(out, *session, *reason),
            LinkMsg::Terminate { session, frame } => encode_terminate(out, *session, frame),
            LinkMsg::Ping { nonce } => encode_ping(out, *nonce),
            LinkMsg::Pong { nonce } => encode_pong(out, *nonce),
        }
    }
}

/// Why a link frame was refused. All are the peer's fault; close the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("link frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u32, max: usize },
    #[error("empty link frame")]
    Empty,
    #[error("unknown link kind {0:#04x}")]
    UnknownKind(u8),
    #[error("link frame of kind {kind:?} has {len} bytes of fields, expected {expected}")]
    BadLength {
        kind: LinkKind,
        len: usize,
        expected: usize,
    },
    #[error("unsupported link version {0}")]
    BadVersion(u16),
}

/// Takes one whole link frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (`buf` untouched). The
/// length, and the kind once its byte is in, are checked before the rest of
/// the frame arrives, so an oversized frame is never buffered. On error
/// `buf` is left as it was and the caller should close the link. Payloads
/// (`frame` fields) are [`Bytes`] split off `buf`, not copied.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<LinkMsg>, LinkError> {
    let Some(len) = buf.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
        return Ok(None);
    };
    if len as usize > max {
        return Err(LinkError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(LinkError::Empty);
    }
    let Some(&kind_byte) = buf.get(4) else {
        return Ok(None);
    };
    let kind = LinkKind::from_u8(kind_byte).ok_or(LinkError::UnknownKind(kind_byte))?;
    let fields_len = len as usize - 1;
    if kind == LinkKind::Hello && fields_len >= 10 {
        // The version comes before the length check, so that a peer of
        // another version hears "version", not "length", whatever its
        // Hello's size.
        let Some(v) = buf.get(13..15) else {
            return Ok(None);
        };
        let version = u16::from_be_bytes([v[0], v[1]]);
        if version != LINK_VERSION {
            return Err(LinkError::BadVersion(version));
        }
    }
    check_len(kind, fields_len)?;
    let total = 4 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if kind == LinkKind::Deliver {
        // The target count is only known once its 4 bytes are in; check it
        // before consuming anything so that an error leaves `buf` intact.
        let count = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
        let need = count.saturating_mul(SESSION_LEN).saturating_add(4);
        if need > fields_len {
            return Err(LinkError::BadLength {
                kind,
                len: fields_len,
                expected: need,
            });
        }
    }
    buf.advance(LINK_HEADER_LEN);
    let mut b = buf.split_to(fields_len).freeze();
    Ok(Some(parse(kind, &mut b)))
}

/// Checks the fields length against the kind's fixed size or minimum.
fn check_len(kind: LinkKind, len: usize) -> Result<(), LinkError> {
    let (expected, exact) = match kind {
        LinkKind::Hello => (HELLO_LEN, true),
        LinkKind::Open | LinkKind::Reopen => (ANNOUNCE_LEN, true),
        LinkKind::Close => (SESSION_FIELDS_LEN, true),
        LinkKind::Client => (SESSION_FIELDS_LEN, false),
        LinkKind::Deliver => (4, false),
        LinkKind::Kick => (SESSION_LEN + 4, true),
        LinkKind::Terminate => (SESSION_LEN, false),
        LinkKind::Ping | LinkKind::Pong => (8, true),
    };
    if len < expected || (exact && len != expected) {
        return Err(LinkError::BadLength {
            kind,
            len,
            expected,
        });
    }
    Ok(())
}

/// Parses fields whose length [`decode`] has already checked.
fn parse(kind: LinkKind, b: &mut Bytes) -> LinkMsg {
    match kind {
        LinkKind::Hello => {
            let gateway_id = b.get_u64();
            let _version = b.get_u16(); // checked by `decode`
            LinkMsg::Hello {
                gateway_id,
                instance: b.get_u64(),
            }
        }
        LinkKind::Open => LinkMsg::Open {
            session: SessionRef::get(b),
            uin: b.get_u64(),
            device: b.get_u32(),
            login_ms: b.get_u64(),
        },
        LinkKind::Close => LinkMsg::Close {
            session: SessionRef::get(b),
            uin: b.get_u64(),
            device: b.get_u32(),
        },
        LinkKind::Client => LinkMsg::Client {
            session: SessionRef::get(b),
            uin: b.get_u64(),
            device: b.get_u32(),
            frame: std::mem::take(b),
        },
        LinkKind::Reopen => LinkMsg::Reopen {
            session: SessionRef::get(b),
            uin: b.get_u64(),
            device: b.get_u32(),
            login_ms: b.get_u64(),
        },
        LinkKind::Deliver => {
            let count = b.get_u32() as usize;
            let targets = (0..count).map(|_| SessionRef::get(b)).collect();
            LinkMsg::Deliver {
                targets,
                frame: std::mem::take(b),
            }
        }
        LinkKind::Kick => LinkMsg::Kick {
            session: SessionRef::get(b),
            reason: b.get_i32(),
        },
        LinkKind::Terminate => LinkMsg::Terminate {
            session: SessionRef::get(b),
            frame: std::mem::take(b),
        },
        LinkKind::Ping => LinkMsg::Ping { nonce: b.get_u64() },
        LinkKind::Pong => LinkMsg::Pong { nonce: b.get_u64() },
    }
}

fn put_header(out: &mut BytesMut, kind: LinkKind, fields_len: usize) {
    out.reserve(LINK_HEADER_LEN + fields_len);
    out.put_u32((fields_len + 1) as u32);
    out.put_u8(kind as u8);
}

/// Appends a `Hello`.
pub fn encode_hello(out: &mut BytesMut, gateway_id: u64, instance: u64) {
    put_header(out, LinkKind::Hello, HELLO_LEN);
    out.put_u64(gateway_id);
    out.put_u16(LINK_VERSION);
    out.put_u64(instance);
}

fn put_session_fields(
    out: &mut BytesMut,
    kind: LinkKind,
    s: SessionRef,
    uin: u64,
    device: u32,
    extra: usize,
) {
    put_header(out, kind, SESSION_FIELDS_LEN + extra);
    s.put(out);
    out.put_u64(uin);
    out.put_u32(device);
}

/// Appends an `Open` of a login made at `login_ms` (Unix ms).
pub fn encode_open(out: &mut BytesMut, session: SessionRef, uin: u64, device: u32, login_ms: u64) {
    put_session_fields(out, LinkKind::Open, session, uin, device, 8);
    out.put_u64(login_ms);
}

/// Appends a `Close`.
pub fn encode_close(out: &mut BytesMut, session: SessionRef, uin: u64, device: u32) {
    put_session_fields(out, LinkKind::Close, session, uin, device, 0);
}

/// Appends a `Reopen` (a re-announce after a link reconnect) of a login
/// made at `login_ms` (Unix ms).
pub fn encode_reopen(
    out: &mut BytesMut,
    session: SessionRef,
    uin: u64,
    device: u32,
    login_ms: u64,
) {
    put_session_fields(out, LinkKind::Reopen, session, uin, device, 8);
    out.put_u64(login_ms);
}

/// Appends a `Client` carrying `frame` (a whole client frame, header and
/// body) as is.
pub fn encode_client(out: &mut BytesMut, session: SessionRef, uin: u64, device: u32, frame: &[u8]) {
    put_session_fields(out, LinkKind::Client, session, uin, device, frame.len());
    out.put_slice(frame);
}

/// Appends a `Client` carrying a decoded client frame: its 12-byte header
/// is written back in front of the body, so the gateway forwards exactly
/// the bytes the client sent (flags as received) with one copy, into the
/// batch buffer.
pub fn encode_client_frame(
    out: &mut BytesMut,
    session: SessionRef,
    uin: u64,
    device: u32,
    frame: &crate::Frame,
) {
    let len = crate::codec::HEADER_LEN + frame.body.len();
    put_session_fields(out, LinkKind::Client, session, uin, device, len);
    crate::codec::Header {
        body_len: frame.body.len() as u32,
        kind: frame.kind,
        flags: frame.flags,
        seq: frame.seq,
    }
    .put(out);
    out.put_slice(&frame.body);
}

/// Appends a `Deliver` of `frame` (a whole client frame) to `targets`.
/// Callers keep `targets` to at most [`MAX_DELIVER_TARGETS`].
pub fn encode_deliver(out: &mut BytesMut, targets: &[SessionRef], frame: &[u8]) {
    put_header(
        out,
        LinkKind::Deliver,
        4 + targets.len() * SESSION_LEN + frame.len(),
    );
    out.put_u32(targets.len() as u32);
    for t in targets {
        t.put(out);
    }
    out.put_slice(frame);
}

/// Appends a `Kick`; `reason` is a `pb::KickReason` value.
pub fn encode_kick(out: &mut BytesMut, session: SessionRef, reason: i32) {
    put_header(out, LinkKind::Kick, SESSION_LEN + 4);
    session.put(out);
    out.put_i32(reason);
}

/// Appends a `Terminate`: write `frame` to the session, then close it.
pub fn encode_terminate(out: &mut BytesMut, session: SessionRef, frame: &[u8]) {
    put_header(out, LinkKind::Terminate, SESSION_LEN + frame.len());
    session.put(out);
    out.put_slice(frame);
}

/// Appends a `Ping`.
pub fn encode_ping(out: &mut BytesMut, nonce: u64) {
    put_header(out, LinkKind::Ping, 8);
    out.put_u64(nonce);
}

/// Appends a `Pong`.
pub fn encode_pong(out: &mut BytesMut, nonce: u64) {
    put_header(out, LinkKind::Pong, 8);
    out.put_u64(nonce);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frame_parts_encode_like_the_whole_frame() {
        let mut whole = BytesMut::new();
        crate::codec::encode_raw(&mut whole, crate::Kind::Send, 9, b"body");
        whole[6] = 0x12; // flags are forwarded as received
        let frame = crate::decode(&mut whole.clone(), 64).unwrap().unwrap();
        let s = SessionRef { conn: 1, epoch: 2 };
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        encode_client(&mut a, s, 3, 4, &whole);
        encode_client_frame(&mut b, s, 3, 4, &frame);
        assert_eq!(a, b);
    }
    use proptest::prelude::*;

    const S: SessionRef = SessionRef {
        conn: 0x0102_0304_0506_0708,
        epoch: 0x1112_1314_1516_1718,
    };
    const S_HEX: &str = "0102030405060708 1112131415161718";

    fn bytes_of(hex_with_spaces: &str) -> Vec<u8> {
        hex::decode(hex_with_spaces.replace(' ', "")).expect("test hex")
    }

    /// Every message with its exact encoding.
    fn golden() -> Vec<(LinkMsg, Vec<u8>)> {
        let frame = Bytes::from_static(b"\x00\x00\x00\x01\x01\x03\x00\x00\x00\x00\x00\x07\x08");
        let s2 = SessionRef { conn: 9, epoch: 10 };
        let cases = [
            (
                LinkMsg::Hello {
                    gateway_id: 0xA1A2_A3A4_A5A6_A7A8,
                    instance: 0xB1B2_B3B4_B5B6_B7B8,
                },
                "00000013 01 a1a2a3a4a5a6a7a8 0002 b1b2b3b4b5b6b7b8".to_string(),
            ),
            (
                LinkMsg::Open {
                    session: S,
                    uin: 42,
                    device: 7,
                    login_ms: 0x0000_018B_CFE5_6800,
                },
                format!("00000025 02 {S_HEX} 000000000000002a 00000007 0000018bcfe56800"),
            ),
            (
                LinkMsg::Close {
                    session: S,
                    uin: 42,
                    device: 7,
                },
                format!("0000001d 03 {S_HEX} 000000000000002a 00000007"),
            ),
            (
                LinkMsg::Reopen {
                    session: S,
                    uin: 42,
                    device: 7,
                    login_ms: 0x0000_018B_CFE5_6800,
                },
                format!("00000025 05 {S_HEX} 000000000000002a 00000007 0000018bcfe56800"),
            ),
            (
                LinkMsg::Client {
                    session: S,
                    uin: 42,
                    device: 7,
                    frame: frame.clone(),
                },
                format!(
                    "0000002a 04 {S_HEX} 000000000000002a 00000007 00000001 01 03 0000 00000007 08"
                ),
            ),
            (
                LinkMsg::Deliver {
                    targets: vec![S, s2],
                    frame: frame.clone(),
                },
                format!(
                    "00000032 81 00000002 {S_HEX} 0000000000000009 000000000000000a \
                     00000001 01 03 0000 00000007 08"
                ),
            ),
            (
                LinkMsg::Deliver {
                    targets: vec![],
                    frame: Bytes::new(),
                },
                "00000005 81 00000000".to_string(),
            ),
            (
                LinkMsg::Kick {
                    session: S,
                    reason: 1,
                },
                format!("00000015 82 {S_HEX} 00000001"),
            ),
            (
                LinkMsg::Terminate {
                    session: S,
                    frame: frame.clone(),
                },
                format!("0000001e 83 {S_HEX} 00000001 01 03 0000 00000007 08"),
            ),
            (
                LinkMsg::Ping { nonce: 5 },
                "00000009 10 0000000000000005".to_string(),
            ),
            (
                LinkMsg::Pong { nonce: 5 },
                "00000009 11 0000000000000005".to_string(),
            ),
        ];
        cases.into_iter().map(|(m, h)| (m, bytes_of(&h))).collect()
    }

    #[test]
    fn golden_bytes_encode_and_decode() {
        for (msg, wire) in golden() {
            let mut out = BytesMut::new();
            msg.encode(&mut out);
            assert_eq!(hex::encode(&out), hex::encode(&wire), "{msg:?}");
            let mut buf = BytesMut::from(&wire[..]);
            assert_eq!(
                decode(&mut buf, DEFAULT_MAX_LINK_FRAME),
                Ok(Some(msg.clone()))
            );
            assert!(buf.is_empty());
            assert_eq!(wire[4], msg.kind() as u8);
        }
    }

    #[test]
    fn every_split_point_decodes_the_same_batch() {
        let mut batch = BytesMut::new();
        let msgs: Vec<LinkMsg> = golden().into_iter().map(|(m, _)| m).collect();
        for m in &msgs {
            m.encode(&mut batch);
        }
        let whole = batch.freeze();
        for cut in 0..=whole.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&whole[..cut], &whole[cut..]] {
                buf.extend_from_slice(part);
                while let Some(m) = decode(&mut buf, DEFAULT_MAX_LINK_FRAME).expect("valid") {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn partial_frame_leaves_buffer_untouched() {
        let (_, wire) = golden().swap_remove(3);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode(&mut buf, DEFAULT_MAX_LINK_FRAME), Ok(None));
            assert_eq!(&buf[..], &wire[..cut]);
        }
    }

    #[test]
    fn payload_is_a_slice_of_the_receive_buffer() {
        let mut buf = BytesMut::new();
        encode_client(&mut buf, S, 1, 2, b"0123456789abcdef");
        let start = buf.as_ptr() as usize;
        let Some(LinkMsg::Client { frame, .. }) = decode(&mut buf, 1024).expect("valid") else {
            panic!("expected Client");
        };
        assert_eq!(
            frame.as_ptr() as usize,
            start + LINK_HEADER_LEN + SESSION_FIELDS_LEN
        );
    }

    #[test]
    fn refusals_are_decided_early_and_leave_buffer_intact() {
        let cases: [(&str, LinkError); 6] = [
            (
                "00100000",
                LinkError::TooLarge {
                    len: 0x0010_0000,
                    max: 1024,
                },
            ),
            ("00000000", LinkError::Empty),
            ("00000001 7f", LinkError::UnknownKind(0x7f)),
            (
                "0000000a 10 00",
                LinkError::BadLength {
                    kind: LinkKind::Ping,
                    len: 9,
                    expected: 8,
                },
            ),
            (
                "00000009 81 00000002 00000000",
                LinkError::BadLength {
                    kind: LinkKind::Deliver,
                    len: 8,
                    expected: 36,
                },
            ),
            (
                "0000000b 01 0000000000000001 0001",
                LinkError::BadVersion(1),
            ),
        ];
        for (hex_in, err) in cases {
            let wire = bytes_of(hex_in);
            let mut buf = BytesMut::from(&wire[..]);
            assert_eq!(decode(&mut buf, 1024), Err(err), "{hex_in}");
            assert_eq!(&buf[..], &wire[..], "{hex_in}");
        }
    }

    #[test]
    fn deliver_count_overflow_is_refused() {
        let wire = bytes_of("00000009 81 ffffffff 00000000");
        let mut buf = BytesMut::from(&wire[..]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(LinkError::BadLength {
                kind: LinkKind::Deliver,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, 200) {}
        }

        #[test]
        fn deliver_round_trips(
            raw in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..40),
            frame in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let targets: Vec<SessionRef> =
                raw.into_iter().map(|(conn, epoch)| SessionRef { conn, epoch }).collect();
            let msg = LinkMsg::Deliver { targets, frame: Bytes::from(frame) };
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            prop_assert_eq!(decode(&mut buf, DEFAULT_MAX_LINK_FRAME), Ok(Some(msg)));
        }
    }
}
