//! Target `link_frame`: the gateway <-> logic link decoder
//! (`proto::link::decode`), fed an arbitrary stream cut into arbitrary
//! reads, with an arbitrary maximum frame length ([`crate::input`]).
//!
//! Invariants, on every call:
//! - no panic;
//! - a decoded message re-encodes through `LinkMsg::encode` to exactly the
//!   bytes it was taken from (length prefix, kind byte, fields), its kind
//!   byte is [`LinkMsg::kind`], and only those bytes leave the buffer;
//! - `Ok(None)` leaves the buffer's bytes as they were, and only while the
//!   frame is incomplete;
//! - a refusal leaves the buffer as it was and is decided by the frame's
//!   own bytes (the same error without anything after it); an oversized or
//!   empty length is refused from the 4-byte prefix alone, an unknown kind
//!   or a wrong fixed size from the first 5 bytes, and a `Hello`'s version
//!   (read before its size, so that a peer of another version hears
//!   "version") from the first 15, so such a frame is never buffered;
//!
//! and over the whole stream: where the reads were cut changes nothing.

use bytes::BytesMut;
use proto::link::{self, LINK_HEADER_LEN, LinkError, LinkKind, LinkMsg};

use crate::input::Input;
use crate::stream::{Outcome, feed};

/// Length prefix, kind byte, `gateway_id` u64 and `version` u16: the bytes
/// a `Hello`'s version is judged from.
const HELLO_VERSION_END: usize = LINK_HEADER_LEN + 8 + 2;

/// Runs the target on one input; panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let input = Input::parse(data);
    let split = run(input.reads(), input.max);
    let whole = run([input.stream], input.max);
    assert_eq!(split, whole, "the cuts between reads changed the outcome");
}

fn run<'a>(reads: impl IntoIterator<Item = &'a [u8]>, max: usize) -> Outcome<LinkMsg, LinkError> {
    feed(reads, |buf| decode_checked(buf, max))
}

/// The `len` field at the front of `b`, if its 4 bytes are in.
fn len_field(b: &[u8]) -> Option<usize> {
    b.first_chunk::<4>()
        .map(|l| u32::from_be_bytes(*l) as usize)
}

/// One `link::decode` call, with every per-call invariant checked.
fn decode_checked(buf: &mut BytesMut, max: usize) -> Result<Option<LinkMsg>, LinkError> {
    let before = buf.to_vec();
    let result = link::decode(buf, max);
    match &result {
        Ok(Some(msg)) => {
            let mut wire = BytesMut::new();
            msg.encode(&mut wire);
            assert!(
                before.starts_with(&wire),
                "message does not re-encode to its bytes"
            );
            assert_eq!(len_field(&wire), Some(wire.len() - 4), "length prefix");
            assert!(wire.len() - 4 <= max, "frame over the maximum");
            assert_eq!(wire[4], msg.kind() as u8, "kind byte");
            assert_eq!(
                &buf[..],
                &before[wire.len()..],
                "consumed more than the frame"
            );
        }
        Ok(None) => {
            assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
            if let Some(len) = len_field(&before) {
                assert!(len <= max && len > 0, "Ok(None) on a refusable length");
                assert!(
                    before.len() < 4 + len,
                    "Ok(None) with a whole frame buffered"
                );
            }
        }
        Err(e) => {
            assert_eq!(&buf[..], &before[..], "an error changed the buffer");
            let len = len_field(&before).expect("refused before the length was in");
            // The frame alone, without whatever followed it.
            let own = &before[..before.len().min(4 + len)];
            assert_eq!(
                refusal(own, max),
                Some(*e),
                "decided by bytes after the frame"
            );
            let early = match e {
                LinkError::TooLarge { .. } | LinkError::Empty => Some(4),
                LinkError::UnknownKind(_) => Some(LINK_HEADER_LEN),
                LinkError::BadVersion(_) => Some(HELLO_VERSION_END),
                LinkError::BadLength {
                    kind: LinkKind::Deliver,
                    len: fields,
                    ..
                } if *fields >= 4 => None, // the target count: needs the frame
                LinkError::BadLength {
                    kind: LinkKind::Hello,
                    len: fields,
                    ..
                } if *fields >= 10 => Some(HELLO_VERSION_END),
                LinkError::BadLength { .. } => Some(LINK_HEADER_LEN),
                _ => None,
            };
            if let Some(n) = early {
                assert_eq!(refusal(&before[..n], max), Some(*e), "not refused early");
            }
        }
    }
    result
}

/// The error `link::decode` gives for exactly `bytes`, if any.
fn refusal(bytes: &[u8], max: usize) -> Option<LinkError> {
    link::decode(&mut BytesMut::from(bytes), max).err()
}
