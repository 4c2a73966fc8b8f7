//! Property tests of the frame codec and login tokens (PROTOCOL.md
//! "Transport and frame" and rule 2).
//!
//! - Any stream of valid frames, cut into chunks anywhere (down to one byte
//!   at a time) and decoded after every chunk, gives back exactly the frames
//!   in order and leaves nothing in the buffer.
//! - Any bytes at all: `decode` never panics, a loop of it ends, and it
//!   consumes nothing when it answers `Ok(None)` or an error, and exactly one
//!   frame when it answers `Ok(Some)`.
//! - Tokens round-trip for any uin, device, expiry and secret, and a token
//!   with any one bit flipped is refused.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use proto::codec::{DEFAULT_MAX_BODY, HEADER_LEN, VERSION, missing};
use proto::{DecodeError, Frame, Header, Kind, TOKEN_LEN, TokenError, TokenKey, decode};

/// A frame as the sender meant it.
fn frame() -> impl Strategy<Value = Frame> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        prop::collection::vec(any::<u8>(), 0..4096),
    ];
    (
        prop::sample::select(Kind::ALL.to_vec()),
        any::<u32>(),
        any::<u16>(),
        body,
    )
        .prop_map(|(kind, seq, flags, body)| Frame {
            kind,
            flags,
            seq,
            body: Bytes::from(body),
        })
}

/// The wire bytes of `frames`, back to back, flags included.
fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        Header {
            body_len: u32::try_from(f.body.len()).expect("test bodies are small"),
            kind: f.kind,
            flags: f.flags,
            seq: f.seq,
        }
        .put(&mut out);
        out.put_slice(&f.body);
    }
    out
}

/// Feeds `chunks` one after another into a receive buffer, draining it with
/// `decode` after each, as a connection's read loop does.
fn receive<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Frame>, TestCaseError> {
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf, DEFAULT_MAX_BODY) {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => return Err(TestCaseError::fail(format!("valid stream refused: {e:?}"))),
            }
        }
    }
    prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(got)
}

/// Bytes that are sometimes noise and sometimes almost frames: runs of
/// random bytes mixed with frames of version 1 (mostly), a real or random
/// kind and a `body_len` that mostly matches the body that follows, so
/// decode reaches all of its branches.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        3 => prop::sample::select(Kind::ALL.to_vec()).prop_map(|k| k as u8),
        1 => any::<u8>(),
    ];
    let version = prop_oneof![8 => Just(VERSION), 1 => any::<u8>()];
    let body = prop::collection::vec(any::<u8>(), 0..100);
    let lie = prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)];
    let almost_frame = (body, lie, version, kind, any::<u16>(), any::<u32>()).prop_map(
        |(body, lie, version, kind, flags, seq)| {
            let mut f = Vec::with_capacity(HEADER_LEN + body.len());
            f.put_u32(lie.unwrap_or(body.len() as u32));
            f.put_u8(version);
            f.put_u8(kind);
            f.put_u16(flags);
            f.put_u32(seq);
            f.extend_from_slice(&body);
            f
        },
    );
    let segment = prop_oneof![
        6 => almost_frame,
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        3 => prop::collection::vec(segment, 0..24).prop_map(|s| s.concat()),
    ]
}

/// A frame limit: the default, or a small one that noise often exceeds.
fn max_body() -> impl Strategy<Value = usize> {
    prop_oneof![Just(DEFAULT_MAX_BODY), 0usize..128]
}

/// Decodes `bytes` until `Ok(None)` or an error, checking every step:
/// a frame consumes exactly its header and body and nothing else; `Ok(None)`
/// and errors consume nothing; the loop is bounded by the input length.
fn drain(bytes: &[u8], max_body: usize) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    // Every frame takes at least a header off the buffer.
    for _ in 0..=bytes.len() / HEADER_LEN {
        let before = buf.clone();
        match decode(&mut buf, max_body) {
            Ok(Some(f)) => {
                let used = HEADER_LEN + f.body.len();
                prop_assert!(f.body.len() <= max_body);
                prop_assert_eq!(before.len() - buf.len(), used);
                prop_assert_eq!(&before[HEADER_LEN..used], &f.body[..]);
                prop_assert_eq!(&before[used..], &buf[..]);
                prop_assert_eq!(before[5], f.kind as u8);
                prop_assert_eq!(&before[8..12], &f.seq.to_be_bytes()[..]);
            }
            Ok(None) => {
                prop_assert_eq!(&buf[..], &before[..], "Ok(None) consumed bytes");
                // Something is still missing, unless the buffer is empty.
                prop_assert_eq!(missing(&buf) == 0, buf.is_empty());
                return Ok(());
            }
            Err(e) => {
                prop_assert_eq!(&buf[..], &before[..], "an error consumed bytes");
                prop_assert!(buf.len() >= HEADER_LEN, "judged a partial header");
                prop_assert_eq!(&buf[8..12], &e.seq().to_be_bytes()[..]);
                match e {
                    DecodeError::BadVersion { version, .. } => prop_assert_eq!(version, buf[4]),
                    DecodeError::UnknownKind { kind, .. } => prop_assert_eq!(kind, buf[5]),
                    DecodeError::TooLarge { body_len, .. } => {
                        prop_assert!(body_len as usize > max_body)
                    }
                    _ => {}
                }
                // Nothing was consumed, so the same answer comes again.
                prop_assert_eq!(decode(&mut buf, max_body), Err(e));
                return Ok(());
            }
        }
    }
    Err(TestCaseError::fail(
        "decode kept returning frames past the input length",
    ))
}

proptest! {
    #[test]
    fn frames_survive_any_chunking(
        frames in prop::collection::vec(frame(), 0..8),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let bytes = wire(&frames);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.dedup();
        let chunks = at.windows(2).map(|w| &bytes[w[0]..w[1]]);
        prop_assert_eq!(receive(chunks)?, frames);
    }

    #[test]
    fn frames_survive_one_byte_at_a_time(frames in prop::collection::vec(frame(), 0..6)) {
        let bytes = wire(&frames);
        prop_assert_eq!(receive(bytes.chunks(1))?, frames);
    }

    #[test]
    fn random_bytes_never_panic_and_the_loop_ends(bytes in noise(), max_body in max_body()) {
        drain(&bytes, max_body)?;
    }

    #[test]
    fn decode_consumes_nothing_on_none_or_error(
        frames in prop::collection::vec(frame(), 1..4),
        cut in any::<Index>(),
        flip in any::<Index>(),
        tail in noise(),
        max_body in max_body(),
    ) {
        // A valid stream cut short (Ok(None) mid-header or mid-body), one
        // with a corrupted byte (often an error), and one with noise after.
        let bytes = wire(&frames);
        drain(&bytes[..cut.index(bytes.len() + 1)], max_body)?;
        let mut bad = bytes.clone();
        bad[flip.index(bytes.len())] ^= 0xff;
        drain(&bad, max_body)?;
        drain(&[bytes, tail].concat(), max_body)?;
    }

    #[test]
    fn tokens_round_trip(
        uin in any::<u64>(),
        device in any::<u32>(),
        expires_at in any::<u64>(),
        age in any::<u64>(),
        secret in prop::collection::vec(any::<u8>(), 0..100),
        other in 0u32..96,
    ) {
        let key = TokenKey::new(&secret);
        let token = key.mint(uin, device, expires_at);
        prop_assert_eq!(token.len(), TOKEN_LEN);
        prop_assert_eq!(&token[..8], &expires_at.to_be_bytes()[..]);
        let now = expires_at.saturating_sub(age);
        prop_assert_eq!(key.verify(&token, uin, device, now), Ok(()));
        prop_assert_eq!(key.verify(&token, uin, device, expires_at), Ok(()));
        // A key made again from the same secret agrees.
        prop_assert_eq!(TokenKey::new(&secret).verify(&token, uin, device, now), Ok(()));
        if let Some(late) = expires_at.checked_add(1) {
            prop_assert_eq!(
                key.verify(&token, uin, device, late),
                Err(TokenError::Expired { expires_at, now: late })
            );
        }
        // Another uin or device (one bit apart) is refused.
        let (uin2, device2) = if other < 64 {
            (uin ^ (1 << other), device)
        } else {
            (uin, device ^ (1 << (other - 64)))
        };
        prop_assert_eq!(key.verify(&token, uin2, device2, now), Err(TokenError::BadMac));
    }

    #[test]
    fn any_flipped_bit_of_a_token_is_refused(
        uin in any::<u64>(),
        device in any::<u32>(),
        expires_at in any::<u64>(),
        secret in prop::collection::vec(any::<u8>(), 1..100),
        secret_bit in any::<Index>(),
    ) {
        let key = TokenKey::new(&secret);
        let token = key.mint(uin, device, expires_at);
        for bit in 0..TOKEN_LEN * 8 {
            let mut bad = token;
            bad[bit / 8] ^= 1 << (bit % 8);
            // Checked at time 0 so that only the MAC can refuse it.
            prop_assert_eq!(
                key.verify(&bad, uin, device, 0),
                Err(TokenError::BadMac),
                "bit {}", bit
            );
        }
        // So is the token under a secret one bit apart (same length: HMAC
        // pads short keys with zeros, so only a same-length change is sure
        // to give another key).
        let mut secret2 = secret.clone();
        let b = secret_bit.index(secret.len() * 8);
        secret2[b / 8] ^= 1 << (b % 8);
        prop_assert_eq!(
            TokenKey::new(&secret2).verify(&token, uin, device, 0),
            Err(TokenError::BadMac)
        );
    }
}
