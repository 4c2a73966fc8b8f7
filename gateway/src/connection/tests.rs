//! Unit tests of the connection policy on a virtual clock ([`Sim`]): bytes
//! in, bytes out, timers, the uplink's queue; no sockets.

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::pb::{self, NetworkType};
use proto::{Frame, Kind, TokenKey};

use super::sim::Sim;
use super::*;
use crate::heartbeat::HeartbeatPolicy;
use crate::ratelimit::Limits;
use crate::session::SessionConfig;

const T0: u64 = 1_000_000;
const UNIX0: u64 = 1_800_000_000_000;
const SECRET: &[u8] = b"connection test secret";
const TICK: u64 = 100;

fn cfg() -> ConnConfig {
    ConnConfig {
        worker: 0,
        workers: 1,
        session: SessionConfig {
            heartbeat: HeartbeatPolicy::default(),
            rate: Limits::default(),
            login_timeout_ms: 10_000,
            linger_ms: 2_000,
            key: TokenKey::new(SECRET),
            session_id_prefix: 0,
        },
        max_body: 65_536,
        write_budget: 1_000,
        max_connections: 4,
        drain_ms: 1_000,
    }
}

fn sim() -> Sim {
    let now = Now {
        mono_ms: T0,
        unix_ms: UNIX0,
    };
    Sim::new(cfg(), now, TICK, 16)
}

fn encode(kind: Kind, seq: u32, msg: &impl Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    proto::encode(&mut out, kind, seq, msg);
    out.to_vec()
}

fn login(uin: u64) -> Vec<u8> {
    let token = TokenKey::new(SECRET).mint(uin, 1, UNIX0 / 1_000 + 3_600);
    let login = pb::Login {
        uin,
        device_id: 1,
        token: Bytes::copy_from_slice(&token),
        network: NetworkType::Wired as i32,
        client_version: "test/1".into(),
    };
    encode(Kind::Login, 1, &login)
}

fn heartbeat(seq: u32) -> Vec<u8> {
    encode(Kind::Heartbeat, seq, &pb::Heartbeat::default())
}

fn send(seq: u32) -> Vec<u8> {
    let req = pb::SendReq {
        channel: 7,
        body: Bytes::from_static(b"hi"),
        client_msg_id: u64::from(seq),
    };
    encode(Kind::Send, seq, &req)
}

fn push(body_len: usize) -> Bytes {
    let mut out = BytesMut::new();
    proto::codec::encode_raw(&mut out, Kind::Push, 0, &vec![7; body_len]);
    out.freeze()
}

/// Every frame in `wire`, which must hold only whole frames.
fn frames(wire: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Some(f) = proto::decode(&mut buf, 1 << 20).expect("well formed") {
        out.push(f);
    }
    assert!(buf.is_empty(), "a partial frame at the end");
    out
}

fn kinds(wire: &[u8]) -> Vec<Kind> {
    frames(wire).iter().map(|f| f.kind).collect()
}

/// A logged-in session at slot `key` (socket room unlimited).
fn logged_in(s: &mut Sim) -> usize {
    let key = s.accept(usize::MAX).unwrap();
    s.read(key, &login(42 + key as u64));
    assert_eq!(kinds(&s.slots[key].wire), [Kind::LoginAck]);
    key
}

#[test]
fn login_is_acked_announced_and_arms_the_idle_timer() {
    let mut s = sim();
    s.link(true);
    let key = logged_in(&mut s);
    let ups = s.take_up();
    assert!(matches!(ups[..], [Up::Open { uin: 42, .. }]), "{ups:?}");
    // Armed (at the idle deadline, or parked at the wheel's horizon short
    // of it: the expiry test below pins the time).
    assert_eq!(s.wheel.len(), 1);
    assert!(s.slots[key].conn.state() == State::Active);
}

#[test]
fn idle_expiry_is_never_early_and_at_most_one_tick_late() {
    let mut s = sim();
    s.link(true);
    let key = logged_in(&mut s);
    s.take_up();
    let idle = u64::from(cfg().session.heartbeat.idle_ms(10_000));
    // A heartbeat half-way moves the deadline (lazily: the wheel fires at
    // the old one and re-arms).
    s.advance(T0 + idle / 2);
    s.read(key, &heartbeat(2));
    let last = T0 + idle / 2;
    s.advance(last + idle - 1);
    assert!(s.slots.contains(key), "expired early");
    s.advance(last + idle + TICK);
    assert!(!s.slots.contains(key), "more than one tick late");
    let freed = &s.freed[0];
    assert!(freed.at_ms >= last + idle && freed.at_ms <= last + idle + TICK);
    assert_eq!(s.sh.stats.expiries.get(), 1);
    assert!(matches!(s.take_up()[..], [Up::Close { uin: 42, .. }]));
}

#[test]
fn an_error_lingers_then_frees_the_slot() {
    let mut s = sim();
    let key = s.accept(usize::MAX).unwrap();
    // Not LOGIN first: ERROR, write side shut, input discarded.
    s.read(key, &heartbeat(9));
    assert_eq!(kinds(&s.slots[key].wire), [Kind::Error]);
    assert!(s.slots[key].shut);
    s.read(key, &login(1));
    assert_eq!(kinds(&s.slots[key].wire), [Kind::Error], "input discarded");
    s.advance(T0 + 2_000 - 1);
    assert!(s.slots.contains(key), "linger cut short");
    s.advance(T0 + 2_000 + TICK);
    assert!(!s.slots.contains(key), "linger too long");
    assert_eq!(s.sh.stats.connections_open.get(), 0);
}

#[test]
fn eof_while_lingering_is_not_counted_twice() {
    let mut s = sim();
    let key = s.accept(usize::MAX).unwrap();
    s.read(key, &heartbeat(9));
    s.eof(key, CloseReason::ClientEof);
    assert!(!s.slots.contains(key));
    let closes: u64 = s.sh.stats.closes.iter().map(|c| c.get()).sum();
    assert_eq!(closes, 1);
}

#[test]
fn a_slow_consumer_is_kicked_right_behind_the_frame_in_progress() {
    let mut s = sim();
    s.link(true);
    let key = logged_in(&mut s);
    let wire_before = s.slots[key].wire.len();
    s.slots[key].room = 10; // 10 bytes of the first PUSH, then blocked
    let target = s.session_ref(key).unwrap();
    for _ in 0..20 {
        s.deliver(&[target], &push(100));
    }
    assert!(s.slots[key].conn.state() == State::Closing);
    let slow = CloseReason::SlowConsumer.index();
    assert_eq!(s.sh.stats.closes[slow].get(), 1);
    assert!(s.slots[key].writable);
    assert!(!s.slots[key].shut, "not before the KICK is written");
    s.set_room(key, usize::MAX);
    assert!(s.slots[key].shut);
    let got = kinds(&s.slots[key].wire[wire_before..]);
    assert_eq!(
        got,
        [Kind::Push, Kind::Kick],
        "the PUSH in progress, whole, then KICK"
    );
}

#[test]
fn a_full_uplink_bounces_requests_and_holds_notices_in_order() {
    let mut s = sim();
    s.link(true);
    s.set_up_room(0);
    let a = logged_in(&mut s); // its Open waits
    s.read(a, &send(2));
    let acks = frames(&s.slots[a].wire);
    let ack = pb::SendAck::decode(acks[1].body.clone()).unwrap();
    assert_eq!(ack.status, pb::Status::Unavailable as i32);
    assert_eq!(s.sh.stats.bounced_full.get(), 1);
    s.set_up_room(16);
    s.turn();
    assert!(matches!(s.take_up()[..], [Up::Open { .. }]));
    s.read(a, &send(3));
    assert!(matches!(s.take_up()[..], [Up::Client { .. }]));
}

#[test]
fn a_request_bounced_by_the_logic_tier_is_answered_unavailable() {
    let mut s = sim();
    s.link(true);
    let key = logged_in(&mut s);
    let mut buf = BytesMut::from(&send(5)[..]);
    let frame = proto::decode(&mut buf, 1 << 20).unwrap().unwrap();
    let r = s.session_ref(key).unwrap();
    s.bounce(r, &frame);
    let f = frames(&s.slots[key].wire);
    assert_eq!((f[1].kind, f[1].seq), (Kind::SendAck, 5));
}

#[test]
fn a_stale_epoch_reaches_nobody_in_a_reused_slot() {
    let mut s = sim();
    let key = logged_in(&mut s);
    let old = s.session_ref(key).unwrap();
    s.eof(key, CloseReason::ClientEof);
    let again = logged_in(&mut s);
    assert_eq!(again, key, "the slot is reused");
    s.deliver(&[old], &push(1));
    s.kick(old, 1);
    assert_eq!(kinds(&s.slots[key].wire), [Kind::LoginAck]);
    assert!(s.slots[key].conn.state() == State::Active);
}

#[test]
fn an_oversized_reply_is_answered_and_an_oversized_push_dropped() {
    let mut s = sim();
    let key = logged_in(&mut s);
    let r = s.session_ref(key).unwrap();
    s.deliver(&[r], &push(65_537));
    let mut reply = BytesMut::new();
    proto::codec::encode_raw(&mut reply, Kind::SendAck, 9, &vec![0; 65_537]);
    s.deliver(&[r], &reply.freeze());
    let f = frames(&s.slots[key].wire);
    assert_eq!(f.len(), 2);
    assert_eq!((f[1].kind, f[1].seq), (Kind::SendAck, 9));
    assert_eq!(s.sh.stats.oversize_dropped.get(), 2);
}

#[test]
fn a_drain_closes_the_unlogged_at_once_and_paces_the_rest() {
    let mut s = sim();
    let a = logged_in(&mut s);
    let b = logged_in(&mut s);
    let idle = s.accept(usize::MAX).unwrap();
    s.start_drain();
    assert!(!s.slots.contains(idle));
    let delay = |k: usize, s: &Sim| {
        let f = frames(&s.slots[k].wire);
        assert_eq!(f[1].kind, Kind::GoAway);
        pb::GoAway::decode(f[1].body.clone())
            .unwrap()
            .reconnect_after_ms
    };
    assert_eq!((delay(a, &s), delay(b, &s)), (0, 500));
    s.advance(T0 + 1);
    assert!(s.slots[a].shut && s.slots[a].conn.state() == State::Closing);
    assert!(s.slots[b].conn.state() == State::Active);
    s.advance(T0 + 501);
    assert!(s.slots[b].conn.state() == State::Closing);
    assert!(
        !s.drain
            .as_ref()
            .unwrap()
            .is_over(s.now.mono_ms, s.slots.len())
    );
}

#[test]
fn link_up_reannounces_live_sessions_and_link_down_voids_waiting_notices() {
    let mut s = sim();
    let a = logged_in(&mut s);
    s.link(true);
    assert!(matches!(s.take_up()[..], [Up::Reopen { .. }]));
    s.set_up_room(0);
    s.eof(a, CloseReason::ClientEof); // its Close waits
    s.link(false);
    s.set_up_room(16);
    s.turn();
    assert!(s.take_up().is_empty());
}

#[test]
fn the_connection_is_48_bytes() {
    assert_eq!(std::mem::size_of::<Connection>(), 48);
}

#[test]
fn unwritten_drops_whole_frames_then_cuts_the_first_partial_one() {
    let frames: [&[u8]; 3] = [b"abc", b"de", b"fgh"];
    let rest = |n| unwritten(frames.iter().copied(), n).collect::<Vec<_>>();
    assert_eq!(rest(0), vec![&b"abc"[..], b"de", b"fgh"]);
    assert_eq!(rest(4), vec![&b"e"[..], b"fgh"]);
    assert_eq!(rest(5), vec![&b"fgh"[..]]);
    assert!(rest(8).is_empty());
}
