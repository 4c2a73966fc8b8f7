//! The frame codec of PROTOCOL.md ("Transport and frame"), sans-io.
//!
//! A frame is a fixed 12-byte big-endian header followed by `body_len` bytes
//! of protobuf. [`decode`] takes the caller's receive buffer and returns a
//! whole frame, `Ok(None)` for "need more bytes", or a [`DecodeError`]
//! decided from the header alone, before any of the body has arrived, so an
//! oversized or malformed frame is refused without buffering it. The body
//! comes back as a [`Bytes`] split off the caller's buffer: no copy.
//!
//! [`encode`] and [`encode_raw`] append header and body to the caller's
//! `BytesMut` directly: the body length is known up front
//! (`Message::encoded_len`), so no intermediate buffer is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 12;
/// The only protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Default maximum body size (PROTOCOL.md rule 11).
pub const DEFAULT_MAX_BODY: usize = 65_536;

/// Every frame kind of PROTOCOL.md ("Kinds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Login = 0x01,
    Heartbeat = 0x02,
    Send = 0x03,
    Sync = 0x04,
    Join = 0x05,
    Leave = 0x06,
    LoginAck = 0x81,
    HeartbeatAck = 0x82,
    SendAck = 0x83,
    SyncAck = 0x84,
    JoinAck = 0x85,
    LeaveAck = 0x86,
    Push = 0x90,
    Kick = 0xA0,
    GoAway = 0xA1,
    Error = 0xFF,
}

impl Kind {
    /// All kinds, client-to-server first.
    pub const ALL: [Kind; 16] = [
        Kind::Login,
        Kind::Heartbeat,
        Kind::Send,
        Kind::Sync,
        Kind::Join,
        Kind::Leave,
        Kind::LoginAck,
        Kind::HeartbeatAck,
        Kind::SendAck,
        Kind::SyncAck,
        Kind::JoinAck,
        Kind::LeaveAck,
        Kind::Push,
        Kind::Kick,
        Kind::GoAway,
        Kind::Error,
    ];

    /// The kind for a header byte, or `None` if the protocol defines none.
    pub const fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Login,
            0x02 => Kind::Heartbeat,
            0x03 => Kind::Send,
            0x04 => Kind::Sync,
            0x05 => Kind::Join,
            0x06 => Kind::Leave,
            0x81 => Kind::LoginAck,
            0x82 => Kind::HeartbeatAck,
            0x83 => Kind::SendAck,
            0x84 => Kind::SyncAck,
            0x85 => Kind::JoinAck,
            0x86 => Kind::LeaveAck,
            0x90 => Kind::Push,
            0xA0 => Kind::Kick,
            0xA1 => Kind::GoAway,
            0xFF => Kind::Error,
            _ => return None,
        })
    }

    /// True for the kinds a client sends (0x01..=0x06).
    pub const fn is_client(self) -> bool {
        (self as u8) < 0x80
    }
}

/// A frame header. `body_len` is implied by the body when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub body_len: u32,
    pub kind: Kind,
    pub flags: u16,
    pub seq: u32,
}

impl Header {
    /// Parses a complete 12-byte header, checking version and kind and the
    /// body length against `max_body`. The header alone decides.
    pub fn parse(b: &[u8; HEADER_LEN], max_body: usize) -> Result<Header, DecodeError> {
        let body_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let seq = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if b[4] != VERSION {
            return Err(DecodeError::BadVersion { version: b[4], seq });
        }
        let Some(kind) = Kind::from_u8(b[5]) else {
            return Err(DecodeError::UnknownKind { kind: b[5], seq });
        };
        if body_len as usize > max_body {
            return Err(DecodeError::TooLarge {
                body_len,
                max_body,
                seq,
            });
        }
        Ok(Header {
            body_len,
            kind,
            flags: u16::from_be_bytes([b[6], b[7]]),
            seq,
        })
    }

    /// Writes the 12 header bytes.
    pub fn put(&self, out: &mut impl BufMut) {
        out.put_u32(self.body_len);
        out.put_u8(VERSION);
        out.put_u8(self.kind as u8);
        out.put_u16(self.flags);
        out.put_u32(self.seq);
    }
}

/// A complete frame. The body is a slice of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub flags: u16,
    pub seq: u32,
    pub body: Bytes,
}

/// Why a header was refused. Each carries the request `seq` so that the
/// ERROR reply can echo it. All are the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame body of {body_len} bytes exceeds the maximum of {max_body}")]
    TooLarge {
        body_len: u32,
        max_body: usize,
        seq: u32,
    },
    #[error("unsupported protocol version {version}")]
    BadVersion { version: u8, seq: u32 },
    #[error("unknown frame kind {kind:#04x}")]
    UnknownKind { kind: u8, seq: u32 },
}

impl DecodeError {
    /// The `seq` of the refused frame.
    pub fn seq(&self) -> u32 {
        match *self {
            DecodeError::TooLarge { seq, .. }
            | DecodeError::BadVersion { seq, .. }
            | DecodeError::UnknownKind { seq, .. } => seq,
        }
    }
}

/// Peeks at the header at the front of `buf`, if all 12 bytes are there.
/// Does not consume anything.
pub fn peek_header(buf: &[u8], max_body: usize) -> Result<Option<Header>, DecodeError> {
    match buf.first_chunk::<HEADER_LEN>() {
        Some(h) => Header::parse(h, max_body).map(Some),
        None => Ok(None),
    }
}

/// Takes one whole frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; `buf` is then untouched.
/// Errors are decided from the header alone, as soon as its 12 bytes are
/// in, whether or not any of the body has arrived; `buf` is then untouched
/// too, and the caller should close the connection.
pub fn decode(buf: &mut BytesMut, max_body: usize) -> Result<Option<Frame>, DecodeError> {
    let Some(header) = peek_header(buf, max_body)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + header.body_len as usize;
    if buf.len() < total {
        // Reserve the rest of this frame now so that the next reads land in
        // one allocation (bounded by max_body, checked above).
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let body = buf.split_to(header.body_len as usize).freeze();
    Ok(Some(Frame {
        kind: header.kind,
        flags: header.flags,
        seq: header.seq,
        body,
    }))
}

/// Number of bytes still needed at the front of `buf`: the rest of the
/// header while it is incomplete, then the rest of the frame (0 when `buf`
/// holds a whole frame or nothing at all).
/// `buf` must not hold a header that [`peek_header`] refuses.
pub fn missing(buf: &[u8]) -> usize {
    if buf.is_empty() {
        return 0;
    }
    match buf.first_chunk::<HEADER_LEN>() {
        None => HEADER_LEN - buf.len(),
        Some(h) => {
            let total = HEADER_LEN + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            total.saturating_sub(buf.len())
        }
    }
}

/// Appends a frame whose body is `msg`, encoded straight into `out`.
pub fn encode<M: prost::Message>(out: &mut BytesMut, kind: Kind, seq: u32, msg: &M) {
    let len = msg.encoded_len();
    out.reserve(HEADER_LEN + len);
    Header {
        body_len: len as u32,
        kind,
        flags: 0,
        seq,
    }
    .put(out);
    // Cannot fail: the capacity was reserved above.
    msg.encode_raw(out);
}

/// Appends a frame with an already-encoded body.
pub fn encode_raw(out: &mut BytesMut, kind: Kind, seq: u32, body: &[u8]) {
    out.reserve(HEADER_LEN + body.len());
    Header {
        body_len: body.len() as u32,
        kind,
        flags: 0,
        seq,
    }
    .put(out);
    out.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_more_bytes_is_not_an_error() {
        let mut buf = BytesMut::new();
        encode_raw(&mut buf, Kind::Send, 7, b"abc");
        let whole = buf.clone();
        assert_eq!(missing(&[]), 0);
        for cut in 1..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part, 16), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut, "a partial frame is left untouched");
            let expect = if cut < HEADER_LEN {
                HEADER_LEN
            } else {
                whole.len()
            };
            assert_eq!(missing(&part), expect - cut);
        }
    }

    #[test]
    fn kinds_round_trip_through_their_byte() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind as u8), Some(kind));
        }
        let known = (0..=255u8).filter(|b| Kind::from_u8(*b).is_some()).count();
        assert_eq!(known, Kind::ALL.len());
    }
}
