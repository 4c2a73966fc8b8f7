//! Target `client_frame`: the client frame decoder (`proto::decode`,
//! PROTOCOL.md "Transport and frame"), fed an arbitrary stream cut into
//! arbitrary reads, with an arbitrary maximum body ([`crate::input`]).
//!
//! Invariants, on every call:
//! - no panic;
//! - a frame re-encodes (header with its flags, then body) to exactly the
//!   bytes it was taken from, its body is within the maximum, and only those
//!   bytes leave the buffer; a frame with flags 0 is also what `encode_raw`
//!   writes;
//! - `Ok(None)` leaves the buffer's bytes as they were, and only while the
//!   header or the body is incomplete (`codec::missing` then says how much
//!   is missing);
//! - an error leaves the buffer as it was, needs only the 12 header bytes
//!   (the same error comes from the header alone, whether or not any body
//!   arrived) and carries the header's `seq`;
//!
//! and over the whole stream: where the reads were cut changes nothing
//! (the same frames, then the same refusal or the same bytes left over).

use bytes::BytesMut;
use proto::codec::{self, HEADER_LEN, Header};
use proto::{DecodeError, Frame, encode_raw};

use crate::input::Input;
use crate::stream::{Outcome, feed};

/// Runs the target on one input; panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let input = Input::parse(data);
    let split = run(input.reads(), input.max);
    let whole = run([input.stream], input.max);
    assert_eq!(split, whole, "the cuts between reads changed the outcome");
}

fn run<'a>(reads: impl IntoIterator<Item = &'a [u8]>, max: usize) -> Outcome<Frame, DecodeError> {
    feed(reads, |buf| decode_checked(buf, max))
}

/// One `proto::decode` call, with every per-call invariant checked.
fn decode_checked(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, DecodeError> {
    let before = buf.to_vec();
    let result = proto::decode(buf, max);
    match &result {
        Ok(Some(frame)) => {
            assert!(frame.body.len() <= max, "body over the maximum");
            let wire = reencode(frame);
            assert!(
                before.starts_with(&wire),
                "frame does not re-encode to its bytes"
            );
            assert_eq!(
                &buf[..],
                &before[wire.len()..],
                "consumed more than the frame"
            );
            assert_eq!(codec::missing(&before), 0, "missing() disagrees");
            if frame.flags == 0 {
                let mut raw = BytesMut::new();
                encode_raw(&mut raw, frame.kind, frame.seq, &frame.body);
                assert_eq!(raw, wire, "encode_raw differs");
            }
        }
        Ok(None) => {
            assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
            if let Some(head) = before.first_chunk::<HEADER_LEN>() {
                let header = Header::parse(head, max).expect("Ok(None) on a refusable header");
                assert!(
                    before.len() < HEADER_LEN + header.body_len as usize,
                    "Ok(None) with a whole frame buffered"
                );
            }
            let missing = codec::missing(&before);
            assert_eq!(missing == 0, before.is_empty(), "missing() disagrees");
        }
        Err(e) => {
            assert_eq!(&buf[..], &before[..], "an error changed the buffer");
            let head = before
                .first_chunk::<HEADER_LEN>()
                .expect("refused before the header was whole");
            let alone = proto::decode(&mut BytesMut::from(&head[..]), max);
            assert_eq!(alone, Err(*e), "not decided from the header alone");
            let seq = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
            assert_eq!(e.seq(), seq, "the error does not carry the header's seq");
        }
    }
    result
}

/// The bytes of `frame` as a sender writes them, flags included.
fn reencode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    Header {
        body_len: u32::try_from(frame.body.len()).expect("a body fits its u32 length"),
        kind: frame.kind,
        flags: frame.flags,
        seq: frame.seq,
    }
    .put(&mut out);
    out.extend_from_slice(&frame.body);
    out
}
