//! Golden wire vectors for PROTOCOL.md ("Transport and frame", "Kinds",
//! "Messages"), and header rejection (rule 11) decided from the 12 header
//! bytes alone.
//!
//! Every vector is a whole frame written out by hand: the 12-byte header
//! (`body_len` u32 BE, version, kind, flags u16 BE, seq u32 BE) then the
//! proto3 body, each field as its tag byte `(field << 3) | wire_type`
//! (0 = varint, 2 = length-delimited) and value. The comment beside each
//! line says what the bytes are. A vector is checked both ways: `encode` of
//! the message must give exactly these bytes, and `decode` of these bytes
//! must give back the kind, seq, flags and a body that decodes to the
//! message.

use bytes::BytesMut;
use prost::Message;
use proto::codec::{DEFAULT_MAX_BODY, HEADER_LEN};
use proto::pb;
use proto::{DecodeError, Kind, decode, encode, encode_raw};

/// 2^32 + 1: a uin that needs a five-byte varint.
const BIG_UIN: u64 = (1 << 32) | 1;
/// 2^63 | 7: the inbox of uin 7, a ten-byte varint.
const INBOX_7: u64 = 0x8000_0000_0000_0007; // 2^63 | 7, written out: a wire vector
/// A Unix time in milliseconds (2027-01-15), a six-byte varint.
const TIME_MS: u64 = 1_800_000_000_000;

/// Bytes of a hex literal; whitespace is ignored so literals can be laid
/// out field by field.
fn unhex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    hex::decode(digits).expect("golden vectors are valid hex")
}

/// Checks one golden vector both ways.
fn check<M>(kind: Kind, seq: u32, frame_hex: &str, msg: &M)
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    let wire = unhex(frame_hex);
    assert!(
        wire.len() >= HEADER_LEN,
        "{kind:?}: vector shorter than a header"
    );

    let mut out = BytesMut::new();
    encode(&mut out, kind, seq, msg);
    assert_eq!(
        hex::encode(&out),
        hex::encode(&wire),
        "{kind:?}: encode differs from the golden bytes"
    );

    let mut raw = BytesMut::new();
    encode_raw(&mut raw, kind, seq, &wire[HEADER_LEN..]);
    assert_eq!(&raw[..], &wire[..], "{kind:?}: encode_raw differs");

    let mut buf = BytesMut::from(&wire[..]);
    let frame = decode(&mut buf, DEFAULT_MAX_BODY)
        .expect("golden vector is a valid frame")
        .expect("golden vector is a whole frame");
    assert!(buf.is_empty(), "{kind:?}: decode left {} bytes", buf.len());
    assert_eq!(frame.kind, kind);
    assert_eq!(frame.seq, seq);
    assert_eq!(frame.flags, 0);
    assert_eq!(&frame.body[..], &wire[HEADER_LEN..]);
    assert_eq!(
        &M::decode(frame.body).expect("body decodes"),
        msg,
        "{kind:?}"
    );
}

const LOGIN: &str = "
    00000017 01 01 0000 00000001  -- body_len 23, v1, LOGIN, flags 0, seq 1
    08 81 80 80 80 10              -- uin = 2^32 + 1
    10 07                          -- device_id = 7
    1a 04 de ad be ef              -- token = de ad be ef
    20 02                          -- network = WIFI
    2a 05 31 2e 32 2e 33           -- client_version = \"1.2.3\"
";

const HEARTBEAT: &str = "
    00000000 01 02 0000 00000002  -- body_len 0, HEARTBEAT, seq 2
";

const SEND: &str = "
    00000009 01 03 0000 00000003  -- body_len 9, SEND, seq 3
    08 2a                          -- channel = 42
    10 ac 02                       -- client_msg_id = 300
    1a 02 68 69                    -- body = \"hi\"
";

const SYNC: &str = "
    00000013 01 04 0000 00000004  -- body_len 19, SYNC, seq 4
    0a 04 08 01 10 05              -- heads[0] = { channel 1, msg_id 5 }
    0a 0b 08 87 80 80 80 80 80 80 80 80 01
                                   -- heads[1] = { channel 2^63|7, msg_id 0 }
";

const JOIN: &str = "
    00000003 01 05 0000 00000005  -- body_len 3, JOIN, seq 5
    08 e8 07                       -- channel = 1000
";

const LEAVE: &str = "
    00000002 01 06 0000 00000006  -- body_len 2, LEAVE, seq 6
    08 01                          -- channel = 1
";

const LOGIN_ACK: &str = "
    00000011 01 81 0000 00000001  -- body_len 17, LOGIN_ACK, seq 1
    08 b0 ea 01                    -- heartbeat_ms = 30000
    10 90 bf 05                    -- idle_timeout_ms = 90000
    18 80 a0 f1 c2 b1 34           -- server_time_ms = 1_800_000_000_000
    20 09                          -- session_id = 9
";

const HEARTBEAT_ACK: &str = "
    00000008 01 82 0000 00000002  -- body_len 8, HEARTBEAT_ACK, seq 2
    08 a0 99 02                    -- next_heartbeat_ms = 36000
    10 e0 cb 06                    -- idle_timeout_ms = 108000
";

const SEND_ACK: &str = "
    00000009 01 83 0000 00000003  -- body_len 9, SEND_ACK, seq 3
    08 01                          -- status = DUPLICATE
    10 2a                          -- channel = 42
    18 11                          -- msg_id = 17
    20 ac 02                       -- client_msg_id = 300
";

const SYNC_ACK: &str = "
    0000000d 01 84 0000 00000004  -- body_len 13, SYNC_ACK, seq 4
    0a 04 08 01 10 05              -- heads[0] = { channel 1, msg_id 5 }
    0a 05 08 2a 10 80 01           -- heads[1] = { channel 42, msg_id 128 }
";

const JOIN_ACK: &str = "
    00000005 01 85 0000 00000005  -- body_len 5, JOIN_ACK, seq 5
                                   -- status = OK: the default, not sent
    10 e8 07                       -- channel = 1000
    18 63                          -- newest_msg_id = 99
";

const LEAVE_ACK: &str = "
    0000000d 01 86 0000 00000006  -- body_len 13, LEAVE_ACK, seq 6
    08 03                          -- status = NOT_MEMBER
    10 87 80 80 80 80 80 80 80 80 01
                                   -- channel = 2^63|7
";

const PUSH: &str = "
    00000017 01 90 0000 00000000  -- body_len 23, PUSH, seq 0 (a push)
    08 2a                          -- channel = 42
    10 11                          -- msg_id = 17
    18 81 80 80 80 10              -- from_uin = 2^32 + 1
    20 07                          -- from_device = 7
    28 80 a0 f1 c2 b1 34           -- sent_at_ms = 1_800_000_000_000
    32 02 68 69                    -- body = \"hi\"
";

const KICK: &str = "
    00000007 01 a0 0000 00000000  -- body_len 7, KICK, seq 0
    08 01                          -- reason = DUPLICATE_LOGIN
    12 03 64 75 70                 -- detail = \"dup\"
";

const GOAWAY: &str = "
    00000003 01 a1 0000 00000000  -- body_len 3, GOAWAY, seq 0
    08 88 27                       -- reconnect_after_ms = 5000
";

const ERROR: &str = "
    0000000d 01 ff 0000 01020304  -- body_len 13, ERROR, seq 0x01020304
    08 03                          -- code = TOO_LARGE
    12 09 74 6f 6f 20 6c 61 72 67 65
                                   -- message = \"too large\"
";

/// Every vector, in the order of `Kind::ALL`.
const VECTORS: [(Kind, &str); 16] = [
    (Kind::Login, LOGIN),
    (Kind::Heartbeat, HEARTBEAT),
    (Kind::Send, SEND),
    (Kind::Sync, SYNC),
    (Kind::Join, JOIN),
    (Kind::Leave, LEAVE),
    (Kind::LoginAck, LOGIN_ACK),
    (Kind::HeartbeatAck, HEARTBEAT_ACK),
    (Kind::SendAck, SEND_ACK),
    (Kind::SyncAck, SYNC_ACK),
    (Kind::JoinAck, JOIN_ACK),
    (Kind::LeaveAck, LEAVE_ACK),
    (Kind::Push, PUSH),
    (Kind::Kick, KICK),
    (Kind::GoAway, GOAWAY),
    (Kind::Error, ERROR),
];

/// Strips the `-- comments` of a vector so that `unhex` sees only digits.
fn vector(text: &str) -> String {
    text.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_vector<M>(kind: Kind, seq: u32, text: &str, msg: &M)
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    check(kind, seq, &vector(text), msg);
}

#[test]
fn every_kind_has_a_vector_with_a_consistent_header() {
    let kinds: Vec<Kind> = VECTORS.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, Kind::ALL);
    for (kind, text) in VECTORS {
        let wire = unhex(&vector(text));
        let body_len = u32::from_be_bytes(wire[0..4].try_into().expect("4 bytes"));
        assert_eq!(
            body_len as usize,
            wire.len() - HEADER_LEN,
            "{kind:?} body_len"
        );
        assert_eq!(wire[4], 1, "{kind:?} version");
        assert_eq!(wire[5], kind as u8, "{kind:?} kind byte");
        assert_eq!(&wire[6..8], &[0, 0], "{kind:?} senders set flags 0");
    }
}

#[test]
fn login() {
    let msg = pb::Login {
        uin: BIG_UIN,
        device_id: 7,
        token: vec![0xde, 0xad, 0xbe, 0xef].into(),
        network: pb::NetworkType::Wifi as i32,
        client_version: "1.2.3".into(),
    };
    check_vector(Kind::Login, 1, LOGIN, &msg);
}

#[test]
fn heartbeat_is_an_empty_body() {
    check_vector(Kind::Heartbeat, 2, HEARTBEAT, &pb::Heartbeat {});
    assert_eq!(unhex(&vector(HEARTBEAT)).len(), HEADER_LEN);
}

#[test]
fn send() {
    let msg = pb::SendReq {
        channel: 42,
        client_msg_id: 300,
        body: b"hi".to_vec().into(),
    };
    check_vector(Kind::Send, 3, SEND, &msg);
}

#[test]
fn sync() {
    let msg = pb::SyncReq {
        heads: vec![
            pb::ChannelHead {
                channel: 1,
                msg_id: 5,
            },
            pb::ChannelHead {
                channel: INBOX_7,
                msg_id: 0,
            },
        ],
    };
    check_vector(Kind::Sync, 4, SYNC, &msg);
}

#[test]
fn join() {
    check_vector(Kind::Join, 5, JOIN, &pb::Join { channel: 1000 });
}

#[test]
fn leave() {
    check_vector(Kind::Leave, 6, LEAVE, &pb::Leave { channel: 1 });
}

#[test]
fn login_ack() {
    let msg = pb::LoginAck {
        heartbeat_ms: 30_000,
        idle_timeout_ms: 90_000,
        server_time_ms: TIME_MS,
        session_id: 9,
    };
    check_vector(Kind::LoginAck, 1, LOGIN_ACK, &msg);
}

#[test]
fn heartbeat_ack() {
    let msg = pb::HeartbeatAck {
        next_heartbeat_ms: 36_000,
        idle_timeout_ms: 108_000,
    };
    check_vector(Kind::HeartbeatAck, 2, HEARTBEAT_ACK, &msg);
}

#[test]
fn send_ack() {
    let msg = pb::SendAck {
        status: pb::Status::Duplicate as i32,
        channel: 42,
        msg_id: 17,
        client_msg_id: 300,
    };
    check_vector(Kind::SendAck, 3, SEND_ACK, &msg);
}

#[test]
fn sync_ack() {
    let msg = pb::SyncAck {
        heads: vec![
            pb::ChannelHead {
                channel: 1,
                msg_id: 5,
            },
            pb::ChannelHead {
                channel: 42,
                msg_id: 128,
            },
        ],
    };
    check_vector(Kind::SyncAck, 4, SYNC_ACK, &msg);
}

#[test]
fn join_ack() {
    let msg = pb::JoinAck {
        status: pb::Status::Ok as i32,
        channel: 1000,
        newest_msg_id: 99,
    };
    check_vector(Kind::JoinAck, 5, JOIN_ACK, &msg);
}

#[test]
fn leave_ack() {
    let msg = pb::LeaveAck {
        status: pb::Status::NotMember as i32,
        channel: INBOX_7,
    };
    check_vector(Kind::LeaveAck, 6, LEAVE_ACK, &msg);
}

#[test]
fn push() {
    let msg = pb::Push {
        channel: 42,
        msg_id: 17,
        from_uin: BIG_UIN,
        from_device: 7,
        sent_at_ms: TIME_MS,
        body: b"hi".to_vec().into(),
    };
    check_vector(Kind::Push, 0, PUSH, &msg);
}

#[test]
fn kick() {
    let msg = pb::Kick {
        reason: pb::KickReason::DuplicateLogin as i32,
        detail: "dup".into(),
    };
    check_vector(Kind::Kick, 0, KICK, &msg);
}

#[test]
fn goaway() {
    let msg = pb::GoAway {
        reconnect_after_ms: 5000,
    };
    check_vector(Kind::GoAway, 0, GOAWAY, &msg);
}

#[test]
fn error() {
    let msg = pb::Error {
        code: pb::error::ErrorCode::TooLarge as i32,
        message: "too large".into(),
    };
    check_vector(Kind::Error, 0x0102_0304, ERROR, &msg);
}

#[test]
fn receivers_ignore_flags() {
    // The LOGIN vector with flags 0x8001: same frame, flags reported.
    let mut wire = unhex(&vector(LOGIN));
    wire[6] = 0x80;
    wire[7] = 0x01;
    let mut buf = BytesMut::from(&wire[..]);
    let frame = decode(&mut buf, DEFAULT_MAX_BODY)
        .expect("flags are not checked")
        .expect("whole frame");
    assert!(buf.is_empty());
    assert_eq!(
        (frame.kind, frame.seq, frame.flags),
        (Kind::Login, 1, 0x8001)
    );
    let login = pb::Login::decode(frame.body).expect("body decodes");
    assert_eq!(login.uin, BIG_UIN);
    assert_eq!(login.client_version, "1.2.3");
}

#[test]
fn back_to_back_vectors_decode_in_order() {
    let mut buf = BytesMut::new();
    for (_, text) in VECTORS {
        buf.extend_from_slice(&unhex(&vector(text)));
    }
    for (kind, text) in VECTORS {
        let wire = unhex(&vector(text));
        let frame = decode(&mut buf, DEFAULT_MAX_BODY)
            .expect("valid")
            .expect("whole");
        assert_eq!(frame.kind, kind);
        assert_eq!(&frame.body[..], &wire[HEADER_LEN..], "{kind:?}");
    }
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, DEFAULT_MAX_BODY), Ok(None));
}

/// A 12-byte header and nothing else.
fn header(body_len: u32, version: u8, kind: u8, seq: u32) -> BytesMut {
    let mut h = BytesMut::new();
    h.extend_from_slice(&body_len.to_be_bytes());
    h.extend_from_slice(&[version, kind, 0, 0]);
    h.extend_from_slice(&seq.to_be_bytes());
    h
}

/// Decodes a header-only buffer and checks that the error left it whole.
fn refuse(mut buf: BytesMut, max_body: usize) -> DecodeError {
    let before = buf.clone();
    let err = decode(&mut buf, max_body).expect_err("header must be refused");
    assert_eq!(buf, before, "a refused header is not consumed");
    err
}

#[test]
fn oversized_body_len_is_refused_from_the_header_alone() {
    let buf = unhex("00010001 01 03 0000 00000abc");
    let err = refuse(BytesMut::from(&buf[..]), DEFAULT_MAX_BODY);
    assert_eq!(
        err,
        DecodeError::TooLarge {
            body_len: 65_537,
            max_body: DEFAULT_MAX_BODY,
            seq: 0xabc
        }
    );
    assert_eq!(err.seq(), 0xabc);

    let err = refuse(header(u32::MAX, 1, 0x01, 5), DEFAULT_MAX_BODY);
    assert!(matches!(
        err,
        DecodeError::TooLarge {
            body_len: u32::MAX,
            seq: 5,
            ..
        }
    ));

    let err = refuse(header(17, 1, 0x90, 6), 16);
    assert_eq!(
        err,
        DecodeError::TooLarge {
            body_len: 17,
            max_body: 16,
            seq: 6
        }
    );
}

#[test]
fn wrong_version_is_refused_from_the_header_alone() {
    for version in [0u8, 2, 0x7f, 0xff] {
        let err = refuse(header(3, version, 0x03, 0xdead_beef), DEFAULT_MAX_BODY);
        assert_eq!(
            err,
            DecodeError::BadVersion {
                version,
                seq: 0xdead_beef
            }
        );
        assert_eq!(err.seq(), 0xdead_beef);
    }
    // The literal form: version byte 0x02.
    let err = refuse(
        BytesMut::from(&unhex("00000000 02 02 0000 00000007")[..]),
        64,
    );
    assert_eq!(err, DecodeError::BadVersion { version: 2, seq: 7 });
}

#[test]
fn unknown_kind_is_refused_from_the_header_alone() {
    for kind in [0x00u8, 0x07, 0x80, 0x87, 0x91, 0xa2, 0xfe] {
        let err = refuse(header(0, 1, kind, 41), DEFAULT_MAX_BODY);
        assert_eq!(err, DecodeError::UnknownKind { kind, seq: 41 });
        assert_eq!(err.seq(), 41);
    }
    // Every byte that is not one of the 16 kinds is refused.
    let refused = (0..=255u8)
        .filter(|&k| {
            matches!(
                decode(&mut header(0, 1, k, 1), DEFAULT_MAX_BODY),
                Err(DecodeError::UnknownKind { .. })
            )
        })
        .count();
    assert_eq!(refused, 256 - Kind::ALL.len());
}

#[test]
fn a_partial_header_is_not_judged() {
    // Eleven bytes of a header that will be refused: not yet an error.
    let bad = header(u32::MAX, 9, 0x00, 1);
    for cut in 0..HEADER_LEN {
        let mut part = BytesMut::from(&bad[..cut]);
        assert_eq!(decode(&mut part, DEFAULT_MAX_BODY), Ok(None), "cut {cut}");
        assert_eq!(part.len(), cut);
    }
}

#[test]
fn a_body_of_exactly_max_body_is_accepted() {
    let body = vec![0x5a; DEFAULT_MAX_BODY];
    let mut wire = BytesMut::new();
    encode_raw(&mut wire, Kind::Send, 77, &body);
    assert_eq!(
        &wire[..HEADER_LEN],
        &unhex("00010000 01 03 0000 0000004d")[..]
    );

    // The header alone is not refused: it waits for the body.
    let mut head = BytesMut::from(&wire[..HEADER_LEN]);
    assert_eq!(decode(&mut head, DEFAULT_MAX_BODY), Ok(None));
    assert_eq!(head.len(), HEADER_LEN);

    let mut buf = wire.clone();
    let frame = decode(&mut buf, DEFAULT_MAX_BODY)
        .expect("max_body is allowed")
        .expect("whole frame");
    assert!(buf.is_empty());
    assert_eq!(
        (frame.kind, frame.seq, frame.body.len()),
        (Kind::Send, 77, DEFAULT_MAX_BODY)
    );

    // Same at a small limit, and one more byte is refused.
    let mut small = BytesMut::new();
    encode_raw(&mut small, Kind::Push, 0, &[1; 16]);
    assert!(matches!(decode(&mut small, 16), Ok(Some(f)) if f.body.len() == 16));
    assert!(matches!(
        refuse(header(17, 1, 0x90, 0), 16),
        DecodeError::TooLarge { body_len: 17, .. }
    ));
}
