//! The gateway binary on loopback, driven by real clients speaking
//! PROTOCOL.md: login, errors, heartbeats, expiry, framing, backend-down
//! answers.

mod support;

use std::time::{Duration, Instant};

use proto::pb::{self, NetworkType, error::ErrorCode};
use proto::{Kind, codec::HEADER_LEN};
use support::{Client, Gateway, frame_bytes, login_msg, token, unix_now};

#[test]
fn login_ok_answers_login_ack() {
    let gw = Gateway::start(&["--threads", "1"]);
    let mut c = Client::connect(gw.addr);
    let before = unix_now() * 1000;
    let ack = c.login(42, 7, NetworkType::Wired);
    assert_eq!(ack.heartbeat_ms, 10_000);
    assert_eq!(ack.idle_timeout_ms, 30_000);
    assert!(ack.server_time_ms >= before && ack.server_time_ms < before + 60_000);
    assert_ne!(ack.session_id, 0);
    // A second login on the same connection is a BAD_FRAME.
    c.send(Kind::Login, 2, &login_msg(42, 7, NetworkType::Wired));
    assert_eq!(c.expect_error(2), ErrorCode::BadFrame);
    c.expect_closed();
}

#[test]
fn bad_expired_and_missing_logins_are_refused_and_closed() {
    let gw = Gateway::start(&["--threads", "1"]);

    let mut c = Client::connect(gw.addr);
    let mut login = login_msg(42, 7, NetworkType::Wifi);
    login.uin = 43; // token minted for 42
    c.send(Kind::Login, 5, &login);
    assert_eq!(c.expect_error(5), ErrorCode::Unauthenticated);
    c.expect_closed();

    let mut c = Client::connect(gw.addr);
    let mut login = login_msg(42, 7, NetworkType::Wifi);
    login.token = token(42, 7, unix_now() - 10);
    c.send(Kind::Login, 6, &login);
    assert_eq!(c.expect_error(6), ErrorCode::Unauthenticated);
    c.expect_closed();

    let mut c = Client::connect(gw.addr);
    c.send(Kind::Heartbeat, 9, &pb::Heartbeat {});
    assert_eq!(c.expect_error(9), ErrorCode::Unauthenticated);
    c.expect_closed();

    let mut c = Client::connect(gw.addr);
    let mut short = login_msg(42, 7, NetworkType::Wifi);
    short.token.truncate(39);
    c.send(Kind::Login, 3, &short);
    assert_eq!(c.expect_error(3), ErrorCode::Unauthenticated);
    c.expect_closed();
}

#[test]
fn login_timeout_sends_error_then_closes() {
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--login-timeout-ms",
        "300",
        "--tick-ms",
        "10",
    ]);
    let start = Instant::now();
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.expect_error(0), ErrorCode::LoginTimeout);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "not before the timeout"
    );
    c.expect_closed();
}

#[test]
fn fixed_heartbeat_policy_is_answered_exactly() {
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--heartbeat-ms",
        "2500",
        "--adaptive-heartbeat",
        "false",
    ]);
    let mut c = Client::connect(gw.addr);
    let ack = c.login(1, 1, NetworkType::Cell2g);
    assert_eq!((ack.heartbeat_ms, ack.idle_timeout_ms), (2_500, 7_500));
    for seq in 2..6 {
        c.send(Kind::Heartbeat, seq, &pb::Heartbeat {});
        let a: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, seq);
        assert_eq!((a.next_heartbeat_ms, a.idle_timeout_ms), (2_500, 7_500));
    }
}

#[test]
fn adaptive_heartbeat_follows_rule_5() {
    let dir = support::TempDir::new("hbcfg");
    let cfg = dir.0.join("gw.toml");
    std::fs::write(&cfg, "[heartbeat]\nmin_ms = 10\nmax_ms = 100000\n").unwrap();
    let gw = Gateway::start(&["--threads", "1", "--config", cfg.to_str().unwrap()]);
    let mut c = Client::connect(gw.addr);
    let ack = c.login(1, 1, NetworkType::Wifi);
    assert_eq!(ack.heartbeat_ms, 30_000);
    // The intervals are the test's input: the client paces its heartbeats
    // (login -> hb1: ~400 ms, hb1 -> hb2: ~100 ms, hb2 -> hb3: ~400 ms)
    // and checks the answers against the formula, within the slack of
    // loopback scheduling.
    let mut last = Instant::now();
    let mut ivs = Vec::new();
    let mut answers = Vec::new();
    for (seq, pause) in [(2, 400), (3, 100), (4, 400)] {
        std::thread::sleep(Duration::from_millis(pause));
        c.send(Kind::Heartbeat, seq, &pb::Heartbeat {});
        ivs.push(last.elapsed().as_millis() as f64);
        last = Instant::now();
        let a: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, seq);
        assert_eq!(a.idle_timeout_ms, 3 * a.next_heartbeat_ms);
        answers.push(f64::from(a.next_heartbeat_ms));
    }
    // One interval observed: unchanged.
    assert_eq!(answers[0], 30_000.0);
    // Older 400 > newer 100: k = 0.8 of the mean.
    let expect = 0.8 * (ivs[0] + ivs[1]) / 2.0;
    assert!(
        (answers[1] - expect).abs() < 40.0,
        "{answers:?} vs {expect}"
    );
    // Older 100 < newer 400: k = 1.2 of the mean.
    let expect = 1.2 * (ivs[1] + ivs[2]) / 2.0;
    assert!(
        (answers[2] - expect).abs() < 60.0,
        "{answers:?} vs {expect}"
    );
}

#[test]
fn silent_session_is_closed_inside_the_rule_4_window() {
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--heartbeat-ms",
        "600",
        "--adaptive-heartbeat",
        "false",
    ]);
    let mut c = Client::connect(gw.addr);
    let ack = c.login(5, 5, NetworkType::Wifi);
    assert_eq!(ack.idle_timeout_ms, 1_800);
    // One more frame moves the idle deadline; measure from it.
    c.send(Kind::Heartbeat, 2, &pb::Heartbeat {});
    let last_frame = Instant::now();
    let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, 2);
    c.expect_closed();
    let silent = last_frame.elapsed();
    assert!(
        silent >= Duration::from_millis(1_800),
        "closed early: {silent:?}"
    );
    assert!(
        silent <= Duration::from_millis(2_800),
        "closed late: {silent:?}"
    );
}

#[test]
fn oversized_wrong_version_and_unknown_kind_are_refused_from_the_header() {
    let gw = Gateway::start(&["--threads", "1", "--max-body", "1000"]);
    let header = |len: u32, version: u8, kind: u8, seq: u32| {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[version, kind, 0, 0]);
        h.extend_from_slice(&seq.to_be_bytes());
        h
    };
    // Before and after login; only the header is ever sent.
    for logged_in in [false, true] {
        for (h, code) in [
            (header(1001, 1, 0x03, 21), ErrorCode::TooLarge),
            (header(0, 2, 0x02, 22), ErrorCode::BadFrame),
            (header(0, 1, 0x07, 23), ErrorCode::BadFrame),
        ] {
            let mut c = Client::connect(gw.addr);
            if logged_in {
                c.login(9, 9, NetworkType::Wired);
            }
            let seq = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            c.write_raw(&h);
            assert_eq!(c.expect_error(seq), code);
            c.expect_closed();
        }
    }
}

#[test]
fn frames_written_one_byte_at_a_time() {
    let gw = Gateway::start(&["--threads", "1"]);
    let mut c = Client::connect(gw.addr);
    let mut bytes = frame_bytes(Kind::Login, 1, &login_msg(3, 4, NetworkType::Wired));
    bytes.extend_from_slice(&frame_bytes(Kind::Heartbeat, 2, &pb::Heartbeat {}));
    for b in bytes.iter() {
        c.write_raw(&[*b]);
    }
    let _: pb::LoginAck = c.expect(Kind::LoginAck, 1);
    let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, 2);
}

#[test]
fn several_frames_in_one_write_are_answered_in_order() {
    let gw = Gateway::start(&["--threads", "1"]);
    let mut c = Client::connect(gw.addr);
    let mut bytes = frame_bytes(Kind::Login, 1, &login_msg(3, 4, NetworkType::Wired));
    for seq in 2..=6 {
        bytes.extend_from_slice(&frame_bytes(Kind::Heartbeat, seq, &pb::Heartbeat {}));
    }
    c.write_raw(&bytes);
    let _: pb::LoginAck = c.expect(Kind::LoginAck, 1);
    for seq in 2..=6 {
        let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, seq);
    }
}

#[test]
fn backend_down_answers_unavailable_without_closing() {
    let gw = Gateway::start(&["--threads", "1"]);
    let mut c = Client::connect(gw.addr);
    c.login(8, 1, NetworkType::Wifi);
    let send = pb::SendReq {
        channel: 77,
        client_msg_id: 1,
        body: b"hello".to_vec().into(),
    };
    c.send(Kind::Send, 2, &send);
    let ack: pb::SendAck = c.expect(Kind::SendAck, 2);
    assert_eq!(ack.status, pb::Status::Unavailable as i32);
    assert_eq!((ack.channel, ack.client_msg_id, ack.msg_id), (77, 1, 0));
    c.send(Kind::Sync, 3, &pb::SyncReq::default());
    assert_eq!(c.expect_error(3), ErrorCode::Unavailable);
    c.send(Kind::Join, 4, &pb::Join { channel: 77 });
    let ack: pb::JoinAck = c.expect(Kind::JoinAck, 4);
    assert_eq!(
        (ack.status, ack.channel),
        (pb::Status::Unavailable as i32, 77)
    );
    c.send(Kind::Leave, 5, &pb::Leave { channel: 77 });
    let ack: pb::LeaveAck = c.expect(Kind::LeaveAck, 5);
    assert_eq!(
        (ack.status, ack.channel),
        (pb::Status::Unavailable as i32, 77)
    );
    // Still alive: the heartbeat is answered.
    c.send(Kind::Heartbeat, 6, &pb::Heartbeat {});
    let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, 6);
}

#[test]
fn sends_over_the_rate_limit_are_answered_rate_limited() {
    let gw = Gateway::start(&["--threads", "1", "--send-rate", "1", "--send-burst", "3"]);
    let mut c = Client::connect(gw.addr);
    c.login(8, 1, NetworkType::Wifi);
    let mut statuses = Vec::new();
    for seq in 2..7 {
        let send = pb::SendReq {
            channel: 1,
            client_msg_id: u64::from(seq),
            body: Default::default(),
        };
        c.send(Kind::Send, seq, &send);
        let ack: pb::SendAck = c.expect(Kind::SendAck, seq);
        assert_eq!(ack.client_msg_id, u64::from(seq));
        statuses.push(pb::Status::try_from(ack.status).unwrap());
    }
    use pb::Status::{RateLimited, Unavailable};
    assert_eq!(
        statuses,
        [
            Unavailable,
            Unavailable,
            Unavailable,
            RateLimited,
            RateLimited
        ]
    );
}
