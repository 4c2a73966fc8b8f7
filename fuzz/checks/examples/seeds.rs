//! Writes the named seed inputs of every target into `fuzz/seeds/<target>/`
//! (the golden vectors of `proto/tests/golden.rs` and of `proto::link`'s
//! tests, valid and refused, whole and cut into reads), in the layout of
//! `fuzz_checks::input`. Inputs that once made a target fail are added to
//! the same directories by hand (named `crash-<what>`), so rerunning this
//! only rewrites the files it names.
//!
//! ```text
//! cargo run -p millgate-fuzz-checks --example seeds
//! ```

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use fuzz_checks::input::Input;
use proto::link::{LinkMsg, SessionRef};
use proto::{Kind, pb};

/// Bytes of a hex literal; whitespace is ignored.
fn unhex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    hex::decode(digits).expect("seed hex is valid")
}

fn frame(kind: Kind, seq: u32, msg: &impl prost::Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    proto::encode(&mut out, kind, seq, msg);
    out.to_vec()
}

fn client_seeds() -> Vec<(&'static str, Vec<u8>)> {
    const MAX: u16 = u16::MAX;
    let login = frame(
        Kind::Login,
        1,
        &pb::Login {
            uin: (1 << 32) | 1,
            device_id: 7,
            token: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            network: pb::NetworkType::Wifi as i32,
            client_version: "1.2.3".into(),
        },
    );
    let heartbeat = frame(Kind::Heartbeat, 2, &pb::Heartbeat {});
    let send = frame(
        Kind::Send,
        3,
        &pb::SendReq {
            channel: 42,
            client_msg_id: 300,
            body: Bytes::from_static(b"hi"),
        },
    );
    let push = frame(
        Kind::Push,
        0,
        &pb::Push {
            channel: 42,
            msg_id: 17,
            from_uin: (1 << 32) | 1,
            from_device: 7,
            sent_at_ms: 1_800_000_000_000,
            body: Bytes::from_static(b"hi"),
        },
    );
    let error = frame(
        Kind::Error,
        0x0102_0304,
        &pb::Error {
            code: pb::error::ErrorCode::TooLarge as i32,
            message: "too large".into(),
        },
    );
    let mut flagged = login.clone();
    flagged[6..8].copy_from_slice(&[0x80, 0x01]);
    let batch: Vec<u8> = [&login[..], &heartbeat, &send, &push, &error].concat();
    vec![
        ("login", Input::build(MAX, &[], &login)),
        ("login-flags-8001", Input::build(MAX, &[], &flagged)),
        ("heartbeat-empty-body", Input::build(MAX, &[], &heartbeat)),
        ("send-cut-in-header", Input::build(MAX, &[5, 0, 7], &send)),
        ("push-cut-in-body", Input::build(MAX, &[14], &push)),
        ("error", Input::build(MAX, &[], &error)),
        (
            "five-frames-odd-reads",
            Input::build(MAX, &[1, 11, 30, 2, 0, 13], &batch),
        ),
        // body_len 65,537 > 65,535, no body: TOO_LARGE from the header.
        (
            "too-large-header-only",
            Input::build(MAX, &[], &unhex("00010001 01 03 0000 00000abc")),
        ),
        // A whole SEND of 2 bytes at a limit of 2 (accepted), then 3 (refused).
        (
            "max-body-exact-then-over",
            Input::build(
                2,
                &[],
                &unhex("00000002 01 03 0000 00000001 0102 00000003 01 03 0000 00000002"),
            ),
        ),
        (
            "bad-version",
            Input::build(MAX, &[], &unhex("00000000 02 02 0000 00000007")),
        ),
        (
            "unknown-kind-after-heartbeat",
            Input::build(
                MAX,
                &[12],
                &[&heartbeat[..], &unhex("00000000 01 07 0000 00000029")].concat(),
            ),
        ),
        (
            "partial-header",
            Input::build(MAX, &[3], &unhex("ffffffff 09 00 0000 000000")),
        ),
    ]
}

fn link_seeds() -> Vec<(&'static str, Vec<u8>)> {
    const MAX: u16 = u16::MAX;
    let s = SessionRef {
        conn: 0x0102_0304_0506_0708,
        epoch: 0x1112_1314_1516_1718,
    };
    let client_frame = Bytes::from_static(b"\x00\x00\x00\x01\x01\x03\x00\x00\x00\x00\x00\x07\x08");
    let msgs = [
        LinkMsg::Hello {
            gateway_id: 0xA1A2_A3A4_A5A6_A7A8,
            instance: 0xB1B2_B3B4_B5B6_B7B8,
        },
        LinkMsg::Open {
            session: s,
            uin: 42,
            device: 7,
            login_ms: 0x0000_018B_CFE5_6800,
        },
        LinkMsg::Close {
            session: s,
            uin: 42,
            device: 7,
        },
        LinkMsg::Reopen {
            session: s,
            uin: 42,
            device: 7,
            login_ms: 0x0000_018B_CFE5_6800,
        },
        LinkMsg::Client {
            session: s,
            uin: 42,
            device: 7,
            frame: client_frame.clone(),
        },
        LinkMsg::Deliver {
            targets: vec![s, SessionRef { conn: 9, epoch: 10 }],
            frame: client_frame.clone(),
        },
        LinkMsg::Deliver {
            targets: vec![],
            frame: Bytes::new(),
        },
        LinkMsg::Kick {
            session: s,
            reason: 1,
        },
        LinkMsg::Terminate {
            session: s,
            frame: client_frame,
        },
        LinkMsg::Ping { nonce: 5 },
        LinkMsg::Pong { nonce: 5 },
    ];
    let wire = |m: &LinkMsg| {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        out.to_vec()
    };
    let batch: Vec<u8> = msgs.iter().flat_map(wire).collect();
    vec![
        ("hello", Input::build(MAX, &[], &wire(&msgs[0]))),
        ("client", Input::build(MAX, &[], &wire(&msgs[4]))),
        (
            "deliver-two-targets",
            Input::build(MAX, &[9, 1], &wire(&msgs[5])),
        ),
        (
            "every-kind-odd-reads",
            Input::build(MAX, &[3, 1, 1, 40, 0, 17, 64, 2], &batch),
        ),
        // The refusals of proto::link's tests, at a maximum of 1,024.
        ("too-large", Input::build(1024, &[], &unhex("00100000"))),
        ("empty", Input::build(1024, &[], &unhex("00000000"))),
        (
            "unknown-kind",
            Input::build(1024, &[], &unhex("00000001 7f")),
        ),
        (
            "ping-wrong-size",
            Input::build(1024, &[], &unhex("0000000a 10 00")),
        ),
        (
            "deliver-count-over-frame",
            Input::build(1024, &[2], &unhex("00000009 81 00000002 00000000")),
        ),
        (
            "deliver-count-overflow",
            Input::build(1024, &[], &unhex("00000009 81 ffffffff 00000000")),
        ),
        // A version 1 Hello (10 bytes of fields): refused by its version,
        // read before its length; then a version 2 Hello of that size.
        (
            "hello-version-1",
            Input::build(1024, &[], &unhex("0000000b 01 0000000000000001 0001")),
        ),
        (
            "hello-v2-too-short",
            Input::build(1024, &[13], &unhex("0000000b 01 0000000000000001 0002")),
        ),
    ]
}

fn write(dir: &Path, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, data) in seeds {
        std::fs::write(dir.join(name), data)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

/// Event sequences for the `connection` target (layout: its module doc and
/// `fuzz_checks::connection::op`).
fn connection_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use fuzz_checks::connection::op::*;
    let accept = |room: u16| {
        let [a, b] = room.to_be_bytes();
        vec![ACCEPT, a, b]
    };
    // FRAME: slot, which, seq, channel, then the kind's own bytes.
    let login = |slot: u8, uin: u8| vec![FRAME, slot, 0, 1, 0, uin, 0];
    let bad_login = |slot: u8| vec![FRAME, slot, 1, 1, 0, 1, 0];
    let heartbeat = |slot: u8, seq: u8| vec![FRAME, slot, 2, seq, 0];
    let send = |slot: u8, seq: u8, len: u8| vec![FRAME, slot, 3, seq, 1, len];
    let join = |slot: u8, seq: u8| vec![FRAME, slot, 4, seq, 2];
    let time = |ms: u32| {
        let [a, b] = ((ms / 2).min(u32::from(u16::MAX)) as u16).to_be_bytes();
        vec![TIME, a, b]
    };
    let deliver = |mask: u8, len: u16, seq: u8| {
        let [a, b] = len.to_be_bytes();
        vec![DELIVER, mask, a, b, seq]
    };
    let room = |slot: u8, n: u16| {
        let [a, b] = n.to_be_bytes();
        vec![ROOM, slot, a, b]
    };
    let link = |up: bool| vec![LINK, u8::from(up)];
    let cat = |parts: &[Vec<u8>]| parts.concat();
    vec![
        (
            "login-heartbeats-then-idle",
            cat(&[
                accept(u16::MAX),
                login(0, 1),
                time(900),
                heartbeat(0, 2),
                time(1_100),
                heartbeat(0, 3),
                time(20_000),
            ]),
        ),
        (
            "slow-consumer",
            cat(&[
                link(true),
                accept(u16::MAX),
                login(0, 1),
                room(0, 10),
                deliver(0x01, 150, 0),
                deliver(0x01, 150, 0),
                deliver(0x01, 150, 0),
                deliver(0x01, 150, 0),
                deliver(0x01, 150, 0),
                room(0, u16::MAX),
                time(2_000),
            ]),
        ),
        (
            "full-uplink-then-link-down",
            cat(&[
                vec![UP_ROOM, 0],
                link(true),
                accept(u16::MAX),
                login(0, 1),
                send(0, 2, 8),
                join(0, 3),
                vec![UP_ROOM, 3, UP_TAKE],
                send(0, 4, 8),
                vec![UP_TAKE],
                link(false),
                link(true),
                vec![UP_TAKE, EOF, 0, 0, UP_TAKE],
            ]),
        ),
        (
            "drain-two-live-one-idle",
            cat(&[
                accept(u16::MAX),
                login(0, 1),
                accept(u16::MAX),
                login(1, 2),
                accept(u16::MAX),
                vec![DRAIN],
                time(1_000),
                time(6_000),
            ]),
        ),
        (
            "errors-and-linger",
            cat(&[
                accept(u16::MAX),
                bad_login(0),
                accept(u16::MAX),
                heartbeat(1, 1),
                accept(u16::MAX),
                vec![RAW, 2, 12, 0, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 7],
                time(500),
                login(2, 3),
                time(2_000),
            ]),
        ),
        (
            "stale-epoch-and-oversize",
            cat(&[
                accept(u16::MAX),
                login(0, 1),
                vec![EOF, 0, 0],
                accept(u16::MAX),
                login(0, 1),
                deliver(0x11, 10, 0),
                vec![KICK, 0x10, 5],
                deliver(0x01, 250, 7),
                deliver(0x01 | 0x40, 250, 7),
                vec![TERMINATE, 0, 0, 10],
                time(3_000),
            ]),
        ),
        (
            "login-timeout",
            cat(&[
                accept(100),
                room(0, 3),
                time(3_100),
                room(0, 100),
                time(2_000),
            ]),
        ),
    ]
}

fn main() -> std::io::Result<()> {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    write(&seeds.join("client_frame"), &client_seeds())?;
    write(&seeds.join("link_frame"), &link_seeds())?;
    write(&seeds.join("connection"), &connection_seeds())?;
    // Every seed passes its own check before it is kept.
    for target in fuzz_checks::TARGETS {
        for entry in std::fs::read_dir(seeds.join(target.name))? {
            (target.check)(&std::fs::read(entry?.path())?);
        }
    }
    Ok(())
}
