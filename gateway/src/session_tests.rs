//! Unit tests of the session state machine: a virtual clock, frames in,
//! bytes out, no sockets.

use super::*;
use bytes::Bytes;
use proto::pb::NetworkType;

const T0: u64 = 1_000_000;
const UNIX0: u64 = 1_800_000_000_000;
const SECRET: &[u8] = b"session test secret";

fn cfg() -> SessionConfig {
    SessionConfig {
        heartbeat: HeartbeatPolicy::default(),
        rate: Limits::default(),
        login_timeout_ms: 10_000,
        linger_ms: 2_000,
        key: TokenKey::new(SECRET),
        session_id_prefix: 7 << 32,
    }
}

/// A fresh rate-limit table (tests of the table itself keep one).
fn tbl() -> ratelimit::Shared {
    ratelimit::Shared::new(1024)
}

fn at(ms: u64) -> Now {
    Now {
        mono_ms: T0 + ms,
        unix_ms: UNIX0 + ms,
    }
}

fn frame(kind: Kind, seq: u32, msg: &impl Message) -> Frame {
    Frame {
        kind,
        flags: 0,
        seq,
        body: Bytes::from(msg.encode_to_vec()),
    }
}

fn login_frame(uin: u64, device: u32, expires_unix_s: u64, network: NetworkType) -> Frame {
    let token = TokenKey::new(SECRET).mint(uin, device, expires_unix_s);
    let login = pb::Login {
        uin,
        device_id: device,
        token: Bytes::copy_from_slice(&token),
        network: network as i32,
        client_version: "test/1".into(),
    };
    frame(Kind::Login, 1, &login)
}

/// Decodes every frame written to `out`.
fn written(out: &mut BytesMut) -> Vec<Frame> {
    let mut frames = vec![];
    while let Some(f) = proto::decode(out, 1 << 20).unwrap() {
        frames.push(f);
    }
    assert!(out.is_empty(), "only whole frames are written");
    frames
}

fn one<M: Message + Default>(out: &mut BytesMut, kind: Kind, seq: u32) -> M {
    let frames = written(out);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].kind, kind);
    assert_eq!(frames[0].seq, seq);
    M::decode(frames[0].body.clone()).unwrap()
}

fn logged_in(network: NetworkType) -> (Session, SessionConfig) {
    let cfg = cfg();
    let mut s = Session::new(at(0).mono_ms, 5);
    let mut out = BytesMut::new();
    let f = login_frame(42, 3, UNIX0 / 1_000 + 60, network);
    assert_eq!(
        s.handle_frame(at(0), &cfg, false, &tbl(), &f, &mut out),
        Outcome::LoggedIn
    );
    let _: pb::LoginAck = one(&mut out, Kind::LoginAck, 1);
    (s, cfg)
}

fn error_of(out: &mut BytesMut, seq: u32) -> ErrorCode {
    let e: pb::Error = one(out, Kind::Error, seq);
    ErrorCode::try_from(e.code).unwrap()
}

#[test]
fn session_is_small() {
    assert!(
        std::mem::size_of::<Session>() <= 40,
        "{}",
        std::mem::size_of::<Session>()
    );
}

#[test]
fn login_ok_answers_the_interval_for_the_network() {
    let cfg = cfg();
    for (net, hb) in [
        (NetworkType::Wired, 10_000),
        (NetworkType::Wifi, 30_000),
        (NetworkType::Cell4g, 90_000),
        (NetworkType::Cell2g, 240_000),
    ] {
        let mut s = Session::new(at(0).mono_ms, 9);
        let mut out = BytesMut::new();
        let f = login_frame(42, 3, UNIX0 / 1_000, net);
        assert_eq!(
            s.handle_frame(at(5), &cfg, false, &tbl(), &f, &mut out),
            Outcome::LoggedIn
        );
        let ack: pb::LoginAck = one(&mut out, Kind::LoginAck, 1);
        assert_eq!(ack.heartbeat_ms, hb);
        assert_eq!(ack.idle_timeout_ms, 3 * hb);
        assert_eq!(ack.server_time_ms, UNIX0 + 5);
        assert_eq!(ack.session_id, (7 << 32) | 9);
        assert_eq!((s.uin(), s.device(), s.state()), (42, 3, State::Active));
    }
}

#[test]
fn bad_and_expired_tokens_are_unauthenticated() {
    let cfg = cfg();
    let mut bad = login_frame(42, 3, UNIX0 / 1_000 + 60, NetworkType::Wifi);
    let mut login = pb::Login::decode(bad.body.clone()).unwrap();
    login.uin = 43;
    bad.body = Bytes::from(login.encode_to_vec());
    let expired = login_frame(42, 3, UNIX0 / 1_000 - 1, NetworkType::Wifi);
    for (f, failure) in [
        (bad, LoginFailure::BadToken),
        (expired, LoginFailure::Expired),
    ] {
        let mut s = Session::new(at(0).mono_ms, 1);
        let mut out = BytesMut::new();
        let outcome = s.handle_frame(at(1), &cfg, true, &tbl(), &f, &mut out);
        assert_eq!(
            outcome,
            Outcome::Close(CloseReason::Unauthenticated(failure))
        );
        assert_eq!(error_of(&mut out, 1), ErrorCode::Unauthenticated);
        assert_eq!(s.state(), State::Closing);
    }
}

#[test]
fn first_frame_must_be_login() {
    let cfg = cfg();
    let mut s = Session::new(at(0).mono_ms, 1);
    let mut out = BytesMut::new();
    let f = frame(Kind::Heartbeat, 9, &pb::Heartbeat {});
    let outcome = s.handle_frame(at(1), &cfg, true, &tbl(), &f, &mut out);
    assert_eq!(
        outcome,
        Outcome::Close(CloseReason::Unauthenticated(LoginFailure::NotLoginFirst))
    );
    assert_eq!(error_of(&mut out, 9), ErrorCode::Unauthenticated);
}

#[test]
fn undecodable_login_and_second_login_are_bad_frames() {
    let cfg = cfg();
    let mut s = Session::new(at(0).mono_ms, 1);
    let mut out = BytesMut::new();
    let garbage = Frame {
        kind: Kind::Login,
        flags: 0,
        seq: 4,
        body: Bytes::from_static(&[0xff, 0xff, 0xff]),
    };
    let outcome = s.handle_frame(at(1), &cfg, true, &tbl(), &garbage, &mut out);
    assert_eq!(outcome, Outcome::Close(CloseReason::BadFrame));
    assert_eq!(error_of(&mut out, 4), ErrorCode::BadFrame);

    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let again = login_frame(42, 3, UNIX0 / 1_000 + 60, NetworkType::Wifi);
    let outcome = s.handle_frame(at(2), &cfg, true, &tbl(), &again, &mut out);
    assert_eq!(outcome, Outcome::Close(CloseReason::BadFrame));
    assert_eq!(error_of(&mut out, 1), ErrorCode::BadFrame);
}

#[test]
fn login_timeout_fires_at_the_deadline_and_not_before() {
    let cfg = cfg();
    let mut s = Session::new(at(0).mono_ms, 1);
    let mut out = BytesMut::new();
    assert_eq!(s.deadline_ms(at(0).mono_ms, &cfg), at(10_000).mono_ms);
    assert_eq!(
        s.on_timer(at(9_999), &cfg, &mut out),
        TimerOutcome::Rearm(at(10_000).mono_ms)
    );
    assert!(out.is_empty());
    assert_eq!(
        s.on_timer(at(10_000), &cfg, &mut out),
        TimerOutcome::Close(CloseReason::LoginTimeout)
    );
    assert_eq!(error_of(&mut out, 0), ErrorCode::LoginTimeout);
}

#[test]
fn idle_expiry_counts_from_the_last_frame_of_any_kind() {
    let (mut s, cfg) = logged_in(NetworkType::Wired); // idle 30 s
    let mut out = BytesMut::new();
    // A SYNC (not a heartbeat) at 20 s is a sign of life too.
    let sync = frame(Kind::Sync, 2, &pb::SyncReq::default());
    assert_eq!(
        s.handle_frame(at(20_000), &cfg, false, &tbl(), &sync, &mut out),
        Outcome::Continue
    );
    out.clear();
    assert_eq!(
        s.on_timer(at(30_000), &cfg, &mut out),
        TimerOutcome::Rearm(at(50_000).mono_ms)
    );
    assert_eq!(
        s.on_timer(at(49_999), &cfg, &mut out),
        TimerOutcome::Rearm(at(50_000).mono_ms)
    );
    assert_eq!(
        s.on_timer(at(50_000), &cfg, &mut out),
        TimerOutcome::Close(CloseReason::IdleTimeout)
    );
    assert!(out.is_empty(), "idle expiry closes without an ERROR");
}

#[test]
fn heartbeat_interval_adapts_as_rule_5_says() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi); // 30 s at t=0
    let mut out = BytesMut::new();
    let hb = |seq| frame(Kind::Heartbeat, seq, &pb::Heartbeat {});
    let mut ack = |s: &mut Session, t: u64, seq: u32, expect: Outcome| {
        assert_eq!(
            s.handle_frame(at(t), &cfg, false, &tbl(), &hb(seq), &mut out),
            expect
        );
        let a: pb::HeartbeatAck = one(&mut out, Kind::HeartbeatAck, seq);
        (a.next_heartbeat_ms, a.idle_timeout_ms)
    };
    // One observed interval (login -> first heartbeat): no change yet.
    assert_eq!(ack(&mut s, 30_000, 2, Outcome::Heartbeat), (30_000, 90_000));
    // iv1 = 30 s, iv2 = 30 s: not shrinking, k = 1.2.
    assert_eq!(
        ack(&mut s, 60_000, 3, Outcome::Heartbeat),
        (36_000, 108_000)
    );
    // iv1 = 30 s, iv2 = 20 s: k = 0.8 of 25 s; the idle deadline moved
    // earlier, so the timer must be re-armed.
    assert_eq!(
        ack(&mut s, 80_000, 4, Outcome::HeartbeatRearm),
        (20_000, 60_000)
    );
    // iv1 = 20 s, iv2 = 1 s: 0.8 × 10.5 s.
    assert_eq!(
        ack(&mut s, 81_000, 5, Outcome::HeartbeatRearm),
        (8_400, 25_200)
    );
    // iv1 = 1 s, iv2 = 1 s: 1.2 s, clamped to the 5 s minimum.
    assert_eq!(
        ack(&mut s, 82_000, 6, Outcome::HeartbeatRearm),
        (5_000, 15_000)
    );
}

#[test]
fn fixed_heartbeat_when_adaptation_is_off() {
    let mut cfg = cfg();
    cfg.heartbeat.adaptive = false;
    cfg.heartbeat.set_all_starting(1_000);
    let mut s = Session::new(at(0).mono_ms, 1);
    let mut out = BytesMut::new();
    let f = login_frame(1, 1, UNIX0 / 1_000 + 5, NetworkType::Cell2g);
    assert_eq!(
        s.handle_frame(at(0), &cfg, false, &tbl(), &f, &mut out),
        Outcome::LoggedIn
    );
    out.clear();
    for (i, t) in [1_000u64, 1_700, 5_000].into_iter().enumerate() {
        let hb = frame(Kind::Heartbeat, i as u32, &pb::Heartbeat {});
        let _ = s.handle_frame(at(t), &cfg, false, &tbl(), &hb, &mut out);
        let a: pb::HeartbeatAck = one(&mut out, Kind::HeartbeatAck, i as u32);
        assert_eq!((a.next_heartbeat_ms, a.idle_timeout_ms), (1_000, 3_000));
    }
}

fn send(seq: u32, channel: u64, client_msg_id: u64) -> Frame {
    let req = pb::SendReq {
        channel,
        client_msg_id,
        body: Bytes::from_static(b"hi"),
    };
    frame(Kind::Send, seq, &req)
}

#[test]
fn sends_over_the_rate_are_refused_with_their_ids() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let mut out = BytesMut::new();
    for i in 0..40 {
        let outcome = s.handle_frame(
            at(10),
            &cfg,
            true,
            &tbl(),
            &send(i, 5, 100 + u64::from(i)),
            &mut out,
        );
        assert_eq!(outcome, Outcome::Forward, "send {i} within the burst");
    }
    assert!(out.is_empty());
    let outcome = s.handle_frame(at(10), &cfg, true, &tbl(), &send(77, 5, 140), &mut out);
    assert_eq!(outcome, Outcome::Continue);
    let ack: pb::SendAck = one(&mut out, Kind::SendAck, 77);
    assert_eq!(ack.status, pb::Status::RateLimited as i32);
    assert_eq!((ack.channel, ack.msg_id, ack.client_msg_id), (5, 0, 140));
    // 50 ms later one more token has arrived.
    let outcome = s.handle_frame(at(60), &cfg, true, &tbl(), &send(78, 5, 140), &mut out);
    assert_eq!(outcome, Outcome::Forward);
}

#[test]
fn backend_down_answers_unavailable_and_keeps_the_session() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let mut out = BytesMut::new();
    assert_eq!(
        s.handle_frame(at(1), &cfg, false, &tbl(), &send(2, 9, 1), &mut out),
        Outcome::Continue
    );
    let ack: pb::SendAck = one(&mut out, Kind::SendAck, 2);
    assert_eq!(ack.status, pb::Status::Unavailable as i32);
    assert_eq!((ack.channel, ack.client_msg_id), (9, 1));

    let sync = frame(Kind::Sync, 3, &pb::SyncReq::default());
    assert_eq!(
        s.handle_frame(at(2), &cfg, false, &tbl(), &sync, &mut out),
        Outcome::Continue
    );
    assert_eq!(error_of(&mut out, 3), ErrorCode::Unavailable);

    let join = frame(Kind::Join, 4, &pb::Join { channel: 12 });
    assert_eq!(
        s.handle_frame(at(3), &cfg, false, &tbl(), &join, &mut out),
        Outcome::Continue
    );
    let ack: pb::JoinAck = one(&mut out, Kind::JoinAck, 4);
    assert_eq!(
        (ack.status, ack.channel),
        (pb::Status::Unavailable as i32, 12)
    );

    let leave = frame(Kind::Leave, 5, &pb::Leave { channel: 12 });
    assert_eq!(
        s.handle_frame(at(4), &cfg, false, &tbl(), &leave, &mut out),
        Outcome::Continue
    );
    let ack: pb::LeaveAck = one(&mut out, Kind::LeaveAck, 5);
    assert_eq!(
        (ack.status, ack.channel),
        (pb::Status::Unavailable as i32, 12)
    );
    assert_eq!(s.state(), State::Active);
}

#[test]
fn backend_up_forwards_sync_join_leave() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let mut out = BytesMut::new();
    for (kind, f) in [
        (Kind::Sync, frame(Kind::Sync, 2, &pb::SyncReq::default())),
        (Kind::Join, frame(Kind::Join, 3, &pb::Join { channel: 1 })),
        (
            Kind::Leave,
            frame(Kind::Leave, 4, &pb::Leave { channel: 1 }),
        ),
    ] {
        assert_eq!(
            s.handle_frame(at(1), &cfg, true, &tbl(), &f, &mut out),
            Outcome::Forward,
            "{kind:?}"
        );
    }
    assert!(out.is_empty());
}

#[test]
fn server_kinds_from_a_client_are_bad_frames() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let mut out = BytesMut::new();
    let f = frame(Kind::Push, 6, &pb::Push::default());
    assert_eq!(
        s.handle_frame(at(1), &cfg, true, &tbl(), &f, &mut out),
        Outcome::Close(CloseReason::BadFrame)
    );
    assert_eq!(error_of(&mut out, 6), ErrorCode::BadFrame);
}

#[test]
fn header_errors_echo_the_seq_and_close() {
    let (mut s, _cfg) = logged_in(NetworkType::Wifi);
    let mut out = BytesMut::new();
    let err = DecodeError::TooLarge {
        body_len: 70_000,
        max_body: 65_536,
        seq: 11,
    };
    assert_eq!(
        s.on_decode_error(at(1), err, &mut out),
        CloseReason::TooLarge
    );
    assert_eq!(error_of(&mut out, 11), ErrorCode::TooLarge);
    let err = DecodeError::UnknownKind {
        kind: 0x42,
        seq: 12,
    };
    assert_eq!(
        s.on_decode_error(at(1), err, &mut out),
        CloseReason::BadFrame
    );
    assert_eq!(error_of(&mut out, 12), ErrorCode::BadFrame);
    assert_eq!(s.state(), State::Closing);
}

#[test]
fn closing_discards_input_and_ends_after_the_linger() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let mut out = BytesMut::new();
    s.begin_closing(at(100));
    let f = frame(Kind::Heartbeat, 1, &pb::Heartbeat {});
    assert_eq!(
        s.handle_frame(at(200), &cfg, true, &tbl(), &f, &mut out),
        Outcome::Continue
    );
    assert!(out.is_empty());
    assert_eq!(
        s.on_timer(at(2_099), &cfg, &mut out),
        TimerOutcome::Rearm(at(2_100).mono_ms)
    );
    assert!(matches!(
        s.on_timer(at(2_100), &cfg, &mut out),
        TimerOutcome::Close(_)
    ));
}

#[test]
fn login_time_is_reported_exactly_and_survives_closing() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    assert_eq!(s.login_unix_ms(at(0)), UNIX0);
    // Hours later, read off a later clock: still the login's time.
    let later = at(5 * 3_600_000 + 41);
    assert_eq!(s.login_unix_ms(later), UNIX0);
    // The wall clock was stepped back 2 s meanwhile: the answer follows it
    // (login times are compared across gateways by their wall clocks).
    let stepped = Now {
        mono_ms: later.mono_ms,
        unix_ms: later.unix_ms - 2_000,
    };
    assert_eq!(s.login_unix_ms(stepped), UNIX0 - 2_000);
    let mut out = BytesMut::new();
    let hb = frame(Kind::Heartbeat, 2, &pb::Heartbeat {});
    let _ = s.handle_frame(at(20), &cfg, false, &tbl(), &hb, &mut out);
    s.begin_closing(at(30));
    assert!(s.logged_in(), "closing keeps what LOGIN did");
    assert_eq!(s.state(), State::Closing);
    assert_eq!(s.login_unix_ms(at(30)), UNIX0);
}

#[test]
fn a_very_old_login_stays_older_than_every_newer_one_across_the_wrap() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let cap = u64::from(LOGIN_AGE_CAP_MS);
    let mut out = BytesMut::new();
    // A frame every hour for 60 days: past the u32 clock's 49.7-day wrap.
    let hour = 3_600_000;
    for h in 1..=60 * 24u64 {
        let hb = frame(Kind::Heartbeat, 2, &pb::Heartbeat {});
        let _ = s.handle_frame(at(h * hour), &cfg, false, &tbl(), &hb, &mut out);
        out.clear();
        let now = at(h * hour);
        let said = s.login_unix_ms(now);
        let true_age = h * hour;
        assert_eq!(said, now.unix_ms - true_age.min(cap), "hour {h}");
    }
}

#[test]
fn closing_before_login_is_not_logged_in() {
    let mut s = Session::new(at(0).mono_ms, 1);
    s.begin_closing(at(1));
    assert_eq!(s.state(), State::Closing);
    assert!(!s.logged_in());
}

#[test]
fn observed_intervals_saturate_at_24_bits() {
    assert_eq!(U24::new(0).get(), 0);
    assert_eq!(U24::new(300_000).get(), 300_000);
    assert_eq!(U24::new(U24::MAX).get(), U24::MAX);
    assert_eq!(U24::new(u32::MAX).get(), U24::MAX);
}

#[test]
fn join_leave_and_sync_over_their_rates_are_refused_and_the_session_stays() {
    let (mut s, mut cfg) = logged_in(NetworkType::Wifi);
    let two = crate::ratelimit::RateLimit {
        per_sec: 10,
        burst: 2,
    };
    cfg.rate.join = two;
    cfg.rate.leave = two;
    cfg.rate.sync = crate::ratelimit::RateLimit {
        per_sec: 1,
        burst: 1,
    };
    let t = tbl();
    let mut out = BytesMut::new();
    let join = |seq| frame(Kind::Join, seq, &pb::Join { channel: 12 });
    let leave = |seq| frame(Kind::Leave, seq, &pb::Leave { channel: 12 });
    let sync = |seq| frame(Kind::Sync, seq, &pb::SyncReq::default());
    for seq in [1, 2] {
        let o = s.handle_frame(at(10), &cfg, true, &t, &join(seq), &mut out);
        assert_eq!(o, Outcome::Forward);
    }
    let o = s.handle_frame(at(10), &cfg, true, &t, &join(3), &mut out);
    assert_eq!(o, Outcome::Continue);
    let ack: pb::JoinAck = one(&mut out, Kind::JoinAck, 3);
    assert_eq!(
        (ack.status, ack.channel),
        (pb::Status::RateLimited as i32, 12)
    );

    // LEAVE has a bucket of its own.
    for seq in [4, 5] {
        let o = s.handle_frame(at(10), &cfg, true, &t, &leave(seq), &mut out);
        assert_eq!(o, Outcome::Forward);
    }
    let _ = s.handle_frame(at(10), &cfg, true, &t, &leave(6), &mut out);
    let ack: pb::LeaveAck = one(&mut out, Kind::LeaveAck, 6);
    assert_eq!(ack.status, pb::Status::RateLimited as i32);

    // SYNC_ACK has no status: ERROR(UNAVAILABLE), which does not close.
    let o = s.handle_frame(at(10), &cfg, true, &t, &sync(7), &mut out);
    assert_eq!(o, Outcome::Forward);
    let o = s.handle_frame(at(500), &cfg, true, &t, &sync(8), &mut out);
    assert_eq!(o, Outcome::Continue);
    assert_eq!(error_of(&mut out, 8), ErrorCode::Unavailable);
    assert_eq!(s.state(), State::Active);

    // RATE_LIMITED comes before UNAVAILABLE, as for SEND.
    let o = s.handle_frame(at(20), &cfg, false, &t, &join(9), &mut out);
    assert_eq!(o, Outcome::Continue);
    let ack: pb::JoinAck = one(&mut out, Kind::JoinAck, 9);
    assert_eq!(ack.status, pb::Status::RateLimited as i32);

    // Tokens come back at the rate: one JOIN per 100 ms, one SYNC per s.
    let o = s.handle_frame(at(110), &cfg, true, &t, &join(10), &mut out);
    assert_eq!(o, Outcome::Forward);
    let o = s.handle_frame(at(1_010), &cfg, true, &t, &sync(11), &mut out);
    assert_eq!(o, Outcome::Forward);
    assert!(out.is_empty());
}

#[test]
fn a_relogin_of_the_same_device_does_not_refill_the_send_bucket() {
    let (mut s, cfg) = logged_in(NetworkType::Wifi);
    let t = tbl();
    let mut out = BytesMut::new();
    let mut n = 0;
    while s.handle_frame(at(10), &cfg, true, &t, &send(n, 5, 1), &mut out) == Outcome::Forward {
        n += 1;
    }
    assert_eq!(n, 40, "the burst");
    let _ = written(&mut out);
    let closed_at = at(20).mono_ms as u32;
    t.closed(&cfg.rate, s.uin(), s.device(), s.send_tat(), closed_at);

    // The same (uin, device) logs in again 20 ms later: still empty.
    let mut again = Session::new(at(20).mono_ms, 6);
    let f = login_frame(42, 3, UNIX0 / 1_000 + 60, NetworkType::Wifi);
    let o = again.handle_frame(at(20), &cfg, true, &t, &f, &mut out);
    assert_eq!(o, Outcome::LoggedIn);
    let _ = written(&mut out);
    let o = again.handle_frame(at(30), &cfg, true, &t, &send(1, 5, 2), &mut out);
    assert_eq!(o, Outcome::Continue);
    let ack: pb::SendAck = one(&mut out, Kind::SendAck, 1);
    assert_eq!(ack.status, pb::Status::RateLimited as i32);
    // Another device of the same user has its own bucket.
    let mut other = Session::new(at(20).mono_ms, 7);
    let f = login_frame(42, 4, UNIX0 / 1_000 + 60, NetworkType::Wifi);
    let _ = other.handle_frame(at(20), &cfg, true, &t, &f, &mut out);
    let _ = written(&mut out);
    let o = other.handle_frame(at(30), &cfg, true, &t, &send(1, 5, 2), &mut out);
    assert_eq!(o, Outcome::Forward);
}
