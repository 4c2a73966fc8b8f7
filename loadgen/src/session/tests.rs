//! The session state machine on a virtual clock, no sockets.

use super::*;
use bytes::BytesMut;

const MS: u64 = 1000;

fn cfg(forced: Option<u32>) -> Config {
    Config {
        forced_heartbeat_ms: forced,
        connect_timeout_us: 5_000 * MS,
        login_timeout_us: 10_000 * MS,
        network: pb::NetworkType::Wired,
    }
}

fn frame<M: Message>(kind: Kind, seq: u32, msg: &M) -> Frame {
    let mut b = BytesMut::new();
    proto::encode(&mut b, kind, seq, msg);
    proto::decode(&mut b, 1 << 16).unwrap().unwrap()
}

fn login_ack(hb_ms: u32) -> Frame {
    frame(
        Kind::LoginAck,
        1,
        &pb::LoginAck {
            heartbeat_ms: hb_ms,
            idle_timeout_ms: 3 * hb_ms,
            server_time_ms: 0,
            session_id: 9,
        },
    )
}

fn hb_ack(seq: u32, next_ms: u32) -> Frame {
    frame(
        Kind::HeartbeatAck,
        seq,
        &pb::HeartbeatAck {
            next_heartbeat_ms: next_ms,
            idle_timeout_ms: 3 * next_ms,
        },
    )
}

/// A logged-in session at `now`, with what it wrote drained.
fn ready(c: &Config, hb_ms: u32, now: u64) -> Session {
    let mut s = Session::new(0, 42);
    let mut out = BytesMut::new();
    s.handle_connected(10, c, &[7; 40], &mut out);
    let ev = s.handle_frame(now, c, &login_ack(hb_ms));
    assert!(matches!(ev, Some(Event::LoggedIn { .. })));
    s
}

#[test]
fn login_frame_is_the_protocol_bytes() {
    let c = cfg(None);
    let mut s = Session::new(0, 1);
    let mut out = BytesMut::new();
    s.handle_connected(3 * MS, &c, &[0xAB; 40], &mut out);
    // Header: body_len 48, version 1, kind LOGIN, flags 0, seq 1.
    assert_eq!(hex_head(&out), "000000300101000000000001");
    // Body: uin=1 (08 01), device_id=1 (10 01), token (1a 28 ab..), network WIRED (20 01).
    let body = &out[12..];
    assert_eq!(&body[..6], &[0x08, 0x01, 0x10, 0x01, 0x1a, 0x28]);
    assert_eq!(&body[48 - 2..], &[0x20, 0x01]);
    assert_eq!(s.phase(), Phase::LoggingIn);
}

fn hex_head(b: &[u8]) -> String {
    b[..12].iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn login_ack_reports_connect_and_login_latency() {
    let c = cfg(None);
    let mut s = Session::new(100, 1);
    let mut out = BytesMut::new();
    s.handle_connected(400, &c, &[0; 40], &mut out);
    let ev = s.handle_frame(1_400, &c, &login_ack(10_000));
    assert_eq!(
        ev,
        Some(Event::LoggedIn {
            connect_us: 300,
            login_us: 1_000
        })
    );
    assert_eq!(s.phase(), Phase::Ready);
}

#[test]
fn first_heartbeat_falls_within_one_interval() {
    let c = cfg(None);
    let s = ready(&c, 10_000, 1_000);
    let t = s.poll_timeout(&c).unwrap();
    assert!(t > 1_000 && t <= 1_000 + 10_000 * MS, "{t}");
}

#[test]
fn heartbeats_follow_the_server_interval_and_time_the_round_trip() {
    let c = cfg(None);
    let mut s = ready(&c, 10_000, 0);
    let t = s.poll_timeout(&c).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(s.handle_timeout(t - 1, &c, &mut out), None);
    assert!(out.is_empty(), "not due yet");
    assert_eq!(s.handle_timeout(t, &c, &mut out), None);
    let f = proto::decode(&mut out, 1 << 16).unwrap().unwrap();
    assert_eq!((f.kind, f.seq, f.body.len()), (Kind::Heartbeat, 2, 0));
    let ev = s.handle_frame(t + 250, &c, &hb_ack(2, 12_000));
    assert_eq!(ev, Some(Event::HeartbeatAcked { rtt_us: Some(250) }));
    // Next one 12 s after the previous send, as the ack said.
    assert_eq!(s.poll_timeout(&c), Some(t + 12_000 * MS));
}

#[test]
fn a_forced_interval_overrides_the_server() {
    let c = cfg(Some(1_000));
    let mut s = ready(&c, 30_000, 0);
    let t = s.poll_timeout(&c).unwrap();
    assert!(t <= 1_000 * MS);
    let mut out = BytesMut::new();
    let _ = s.handle_timeout(t, &c, &mut out);
    let ev = s.handle_frame(t + 5, &c, &hb_ack(2, 30_000));
    assert_eq!(ev, Some(Event::HeartbeatAcked { rtt_us: Some(5) }));
    assert_eq!(s.poll_timeout(&c), Some(t + 1_000 * MS));
}

#[test]
fn timeouts_fail_sessions_that_never_log_in() {
    let c = cfg(None);
    let mut s = Session::new(0, 1);
    let mut out = BytesMut::new();
    assert_eq!(s.poll_timeout(&c), Some(5_000 * MS));
    assert_eq!(
        s.handle_timeout(5_000 * MS, &c, &mut out),
        Some(Event::Failed(Reason::ConnectTimeout))
    );
    let mut s = Session::new(0, 1);
    s.handle_connected(1, &c, &[0; 40], &mut out);
    assert_eq!(s.handle_timeout(10_000 * MS, &c, &mut out), None);
    assert_eq!(
        s.handle_timeout(10_000 * MS + 1, &c, &mut out),
        Some(Event::Failed(Reason::LoginTimeout))
    );
    assert_eq!(s.poll_timeout(&c), None);
}

#[test]
fn an_error_before_login_is_a_failure_and_after_it_a_loss() {
    let c = cfg(None);
    let err = frame(
        Kind::Error,
        1,
        &pb::Error {
            code: pb::error::ErrorCode::Unauthenticated as i32,
            message: String::new(),
        },
    );
    let mut s = Session::new(0, 1);
    let mut out = BytesMut::new();
    s.handle_connected(1, &c, &[0; 40], &mut out);
    let ev = s.handle_frame(2, &c, &err);
    assert_eq!(ev, Some(Event::Failed(Reason::ServerError(2))));
    assert_eq!(Reason::ServerError(2).as_str(), "error UNAUTHENTICATED");

    let mut s = ready(&c, 10_000, 0);
    assert_eq!(s.handle_closed(), Some(Event::Lost(Reason::Closed)));
    assert_eq!(s.handle_closed(), None, "counted once");
}

#[test]
fn unavailable_keeps_the_session() {
    let c = cfg(None);
    let mut s = ready(&c, 10_000, 0);
    let err = frame(
        Kind::Error,
        3,
        &pb::Error {
            code: pb::error::ErrorCode::Unavailable as i32,
            message: String::new(),
        },
    );
    assert_eq!(s.handle_frame(5, &c, &err), None);
    assert_eq!(s.phase(), Phase::Ready);
}

#[test]
fn goaway_then_close_is_not_a_loss() {
    let c = cfg(None);
    let mut s = ready(&c, 10_000, 0);
    let ev = s.handle_frame(
        5,
        &c,
        &frame(
            Kind::GoAway,
            0,
            &pb::GoAway {
                reconnect_after_ms: 1234,
            },
        ),
    );
    assert_eq!(ev, Some(Event::GoAway { after_ms: 1234 }));
    assert_eq!(s.handle_closed(), None);
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn a_kick_is_a_loss_with_its_reason() {
    let c = cfg(None);
    let mut s = ready(&c, 10_000, 0);
    let kick = frame(
        Kind::Kick,
        0,
        &pb::Kick {
            reason: pb::KickReason::DuplicateLogin as i32,
            detail: String::new(),
        },
    );
    let ev = s.handle_frame(5, &c, &kick);
    assert_eq!(ev, Some(Event::Lost(Reason::Kicked(1))));
    assert_eq!(Reason::Kicked(1).as_str(), "kick DUPLICATE_LOGIN");
}

#[test]
fn a_heartbeat_ack_before_login_is_unexpected() {
    let c = cfg(None);
    let mut s = Session::new(0, 1);
    let mut out = BytesMut::new();
    s.handle_connected(1, &c, &[0; 40], &mut out);
    assert_eq!(
        s.handle_frame(2, &c, &hb_ack(1, 1000)),
        Some(Event::Failed(Reason::Unexpected))
    );
}

#[test]
fn send_and_join_write_their_frames_only_when_logged_in() {
    let c = cfg(None);
    let mut s = Session::new(0, 1);
    let mut out = BytesMut::new();
    assert!(!s.send(5, 1, b"x", &mut out));
    assert!(!s.join(5, &mut out));
    assert!(out.is_empty());
    let mut s = ready(&c, 10_000, 0);
    assert!(s.join(7, &mut out));
    assert!(s.send(7, 99, &crate::chat::body(1234, 16), &mut out));
    let j = proto::decode(&mut out, 1 << 16).unwrap().unwrap();
    assert_eq!((j.kind, j.seq), (Kind::Join, 2));
    assert_eq!(pb::Join::decode(j.body).unwrap().channel, 7);
    let f = proto::decode(&mut out, 1 << 16).unwrap().unwrap();
    assert_eq!((f.kind, f.seq), (Kind::Send, 3));
    let req = pb::SendReq::decode(f.body).unwrap();
    assert_eq!(
        (req.channel, req.client_msg_id, req.body.len()),
        (7, 99, 16)
    );
}

#[test]
fn acks_and_pushes_come_back_as_events() {
    let c = cfg(None);
    let mut s = ready(&c, 10_000, 0);
    let ack = frame(
        Kind::SendAck,
        3,
        &pb::SendAck {
            status: pb::Status::RateLimited as i32,
            channel: 7,
            msg_id: 0,
            client_msg_id: 99,
        },
    );
    assert_eq!(
        s.handle_frame(1, &c, &ack),
        Some(Event::SendAcked {
            status: 2,
            channel: 7,
            msg_id: 0
        })
    );
    let push = frame(
        Kind::Push,
        0,
        &pb::Push {
            channel: 7,
            msg_id: 12,
            from_uin: 2,
            from_device: 1,
            sent_at_ms: 0,
            body: crate::chat::body(555, 8).into(),
        },
    );
    assert_eq!(
        s.handle_frame(2, &c, &push),
        Some(Event::Pushed {
            channel: 7,
            msg_id: 12,
            stamp_us: Some(555)
        })
    );
    let join = frame(
        Kind::JoinAck,
        4,
        &pb::JoinAck {
            status: 0,
            channel: 7,
            newest_msg_id: 0,
        },
    );
    assert_eq!(
        s.handle_frame(3, &c, &join),
        Some(Event::Joined { status: 0 })
    );
}
