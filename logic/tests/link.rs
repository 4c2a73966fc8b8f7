//! End-to-end tests of the `logic` binary through the link protocol, with
//! fake gateways (two for the cross-gateway cases).

mod common;

use common::{Gateway, Logic, Sess, inbox, to};
use proto::codec::Kind;
use proto::link::{self, LinkMsg};
use proto::pb::{self, Status};

/// Joins `s` to `room` and waits for the OK.
fn joined(g: &mut Gateway, s: Sess, room: u64) {
    g.join(s, room, 1);
    let got = g.collect(1);
    assert_eq!(got[0].kind, Kind::JoinAck);
    let ack = pb::JoinAck::decode_from(&got[0].body);
    assert_eq!((ack.status, ack.channel), (Status::Ok as i32, room));
}

trait DecodeFrom: prost::Message + Default {
    fn decode_from(b: &bytes::Bytes) -> Self {
        Self::decode(b.clone()).expect("body decodes")
    }
}
impl<M: prost::Message + Default> DecodeFrom for M {}

#[test]
fn room_fan_out_across_two_gateways() {
    let logic = Logic::start(&[]);
    let mut ga = logic.gateway(0xA);
    let mut gb = logic.gateway(0xB);
    let mut gc = logic.gateway(0xC);
    let room = 4242;
    let on_a: Vec<Sess> = (1..=3).map(|i| Sess::new(i, 100 + i, i, 1)).collect();
    let on_b: Vec<Sess> = vec![Sess::new(1, 7, 4, 1), Sess::new(2, 8, 1, 2)];
    let outsider = Sess::new(9, 9, 99, 1);
    for &s in &on_a {
        ga.open(s);
        joined(&mut ga, s, room);
    }
    for &s in &on_b {
        gb.open(s);
        joined(&mut gb, s, room);
    }
    gc.open(outsider);

    const N: u64 = 30;
    for cmid in 1..=N {
        match cmid % 3 {
            0 => gb.send(on_b[0], room, cmid, b"from b"),
            _ => ga.send(on_a[(cmid % 3) as usize], room, cmid, b"from a"),
        }
    }
    // Gateway A: 3 sessions x N pushes + the acks of its senders.
    let acks_a = (1..=N).filter(|c| c % 3 != 0).count();
    let got_a = ga.collect(3 * N as usize + acks_a);
    let got_b = gb.collect(2 * N as usize + (N as usize - acks_a));
    for (got, sessions) in [(&got_a, &on_a), (&got_b, &on_b)] {
        for &s in sessions.iter() {
            let ids: Vec<u64> = to(got, s, Kind::Push)
                .iter()
                .map(|g| g.push().msg_id)
                .collect();
            assert_eq!(ids, (1..=N).collect::<Vec<_>>(), "session {s:?}");
        }
        for p in got.iter().filter(|g| g.kind == Kind::Push) {
            assert_eq!(
                p.fanout,
                sessions.len(),
                "one Deliver per gateway listing all its members"
            );
            let push = p.push();
            assert_eq!(push.channel, room);
            assert!(push.sent_at_ms > 0);
        }
    }
    let mut acked: Vec<u64> = got_a
        .iter()
        .chain(&got_b)
        .filter(|g| g.kind == Kind::SendAck)
        .map(|g| {
            let ack = g.send_ack();
            assert_eq!(ack.status, Status::Ok as i32);
            assert_eq!(ack.client_msg_id, u64::from(g.seq), "reply echoes seq");
            ack.msg_id
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=N).collect::<Vec<_>>());
    // Nothing more is on its way: every SEND was acked, so the room's shard
    // answers a JOIN from each gateway only after all their PUSHes were
    // queued (common: "Barriers, not silence"). The outsider got none; no
    // member got one twice.
    assert_eq!(gc.join_barrier(outsider, room, 90), N);
    assert_eq!(ga.join_barrier(on_a[0], room, 91), N);
    assert_eq!(gb.join_barrier(on_b[0], room, 92), N);
    assert_eq!(logic.metric("logic_messages_stored_total"), N);
    assert_eq!(logic.metric("logic_pushes_sent_total"), 5 * N);
    assert_eq!(logic.metric("logic_sessions_routed"), 6);
}

#[test]
fn inbox_dm_reaches_the_owner_only() {
    let logic = Logic::start(&[]);
    let mut ga = logic.gateway(1);
    let mut gb = logic.gateway(2);
    let alice = Sess::new(1, 1, 10, 1);
    let bob_phone = Sess::new(1, 1, 20, 1);
    let bob_laptop = Sess::new(2, 2, 20, 2);
    ga.open(alice);
    gb.open(bob_phone);
    gb.open(bob_laptop);
    ga.send(alice, inbox(20), 5, b"hello bob");
    let ack = ga.collect(1)[0].send_ack();
    assert_eq!(
        (ack.status, ack.channel, ack.msg_id),
        (Status::Ok as i32, inbox(20), 1)
    );
    let got = gb.collect(2);
    for s in [bob_phone, bob_laptop] {
        let p = to(&got, s, Kind::Push)[0].push();
        assert_eq!(
            (p.channel, p.msg_id, p.from_uin, p.from_device),
            (inbox(20), 1, 10, 1)
        );
        assert_eq!(&p.body[..], b"hello bob");
    }
    // The sender got no PUSH of her DM: her retry is answered DUPLICATE by
    // her own shard only after bob's shard flushed the fan-out; bob got
    // nothing more: his SYNC is answered after his inbox's shard handled
    // everything before it (common: "Barriers, not silence").
    ga.send(alice, inbox(20), 5, b"hello bob");
    let dup = ga.expect_next(alice, Kind::SendAck, 5).send_ack();
    assert_eq!((dup.status, dup.msg_id), (Status::Duplicate as i32, 1));
    gb.sync(bob_phone, 6, &[(inbox(20), 1)]);
    gb.expect_next(bob_phone, Kind::SyncAck, 6);
}

/// One client request made through a fake gateway.
type Action = Box<dyn Fn(&mut Gateway)>;

#[test]
fn join_leave_and_refusals() {
    let logic = Logic::start(&["--max-send-body", "16"]);
    let mut g = logic.gateway(1);
    let s = Sess::new(1, 1, 10, 1);
    g.open(s);
    let status_of = |g: &mut Gateway| -> (Kind, i32) {
        let got = g.collect(1);
        let status = match got[0].kind {
            Kind::JoinAck => pb::JoinAck::decode_from(&got[0].body).status,
            Kind::LeaveAck => pb::LeaveAck::decode_from(&got[0].body).status,
            Kind::SendAck => got[0].send_ack().status,
            other => panic!("unexpected {other:?}"),
        };
        (got[0].kind, status)
    };
    let cases: Vec<(&str, Action, Kind, Status)> = vec![
        (
            "send to a room not joined",
            Box::new(move |g| g.send(s, 7, 1, b"x")),
            Kind::SendAck,
            Status::NotMember,
        ),
        (
            "join channel 0",
            Box::new(move |g| g.join(s, 0, 2)),
            Kind::JoinAck,
            Status::Invalid,
        ),
        (
            "join an inbox",
            Box::new(move |g| g.join(s, inbox(10), 3)),
            Kind::JoinAck,
            Status::NotMember,
        ),
        (
            "leave an inbox",
            Box::new(move |g| g.leave(s, inbox(11), 4)),
            Kind::LeaveAck,
            Status::NotMember,
        ),
        (
            "leave a room not joined",
            Box::new(move |g| g.leave(s, 7, 5)),
            Kind::LeaveAck,
            Status::NotMember,
        ),
        (
            "send to channel 0",
            Box::new(move |g| g.send(s, 0, 1, b"x")),
            Kind::SendAck,
            Status::Invalid,
        ),
        (
            "join a room",
            Box::new(move |g| g.join(s, 7, 6)),
            Kind::JoinAck,
            Status::Ok,
        ),
        (
            "send too large",
            Box::new(move |g| g.send(s, 7, 1, &[1; 17])),
            Kind::SendAck,
            Status::TooLarge,
        ),
        (
            "leave the room",
            Box::new(move |g| g.leave(s, 7, 7)),
            Kind::LeaveAck,
            Status::Ok,
        ),
        (
            "send after leaving",
            Box::new(move |g| g.send(s, 7, 1, b"x")),
            Kind::SendAck,
            Status::NotMember,
        ),
    ];
    for (what, act, kind, status) in cases {
        act(&mut g);
        assert_eq!(status_of(&mut g), (kind, status as i32), "{what}");
    }
    // A refused id may be retried: it is stored now, in the sender's inbox.
    g.send(s, inbox(10), 1, b"note to self");
    let got = g.collect(2);
    let ack = to(&got, s, Kind::SendAck)[0].send_ack();
    assert_eq!((ack.status, ack.msg_id), (Status::Ok as i32, 1));
    assert_eq!(to(&got, s, Kind::Push)[0].push().msg_id, 1);
}

#[test]
fn duplicate_send_after_a_dropped_ack() {
    let logic = Logic::start(&[]);
    let mut g = logic.gateway(1);
    let first = Sess::new(1, 1, 10, 1);
    let peer = Sess::new(2, 2, 11, 1);
    for s in [first, peer] {
        g.open(s);
        joined(&mut g, s, 5);
    }
    g.send(first, 5, 1000, b"once");
    // The ACK and the pushes arrive, but the client never saw the ACK: it
    // reconnects (new epoch) and retries the same client_msg_id.
    let got = g.collect(3);
    assert_eq!(to(&got, first, Kind::SendAck)[0].send_ack().msg_id, 1);
    g.close(first);
    let again = Sess::new(1, 2, 10, 1);
    g.open(again);
    g.send(again, 5, 1000, b"once");
    let ack = g.collect(1)[0].send_ack();
    assert_eq!(
        (ack.status, ack.msg_id, ack.client_msg_id),
        (Status::Duplicate as i32, 1, 1000)
    );
    g.send(again, 5, 999, b"older");
    let ack = g.collect(1)[0].send_ack();
    assert_eq!((ack.status, ack.msg_id), (Status::Duplicate as i32, 0));
    // The duplicates stored and pushed nothing: the room's shard answers
    // this JOIN after anything they could have sent it, and its newest id
    // is still 1 (common: "Barriers, not silence").
    assert_eq!(g.join_barrier(again, 5, 3), 1);
    assert_eq!(logic.metric("logic_messages_stored_total"), 1);
    assert_eq!(logic.metric("logic_duplicates_total"), 2);
    g.send(again, 5, 1001, b"next");
    let got = g.collect(3);
    assert_eq!(to(&got, again, Kind::SendAck)[0].send_ack().msg_id, 2);
}

#[test]
fn sync_returns_exactly_the_missed_messages_then_heads() {
    let logic = Logic::start(&[]);
    let mut g = logic.gateway(1);
    let alice = Sess::new(1, 1, 10, 1);
    let bob = Sess::new(2, 2, 20, 1);
    for s in [alice, bob] {
        g.open(s);
        for room in [5, 6, 7] {
            joined(&mut g, s, room);
        }
    }
    g.close(bob);
    for cmid in 1..=6 {
        g.send(alice, 5, cmid, format!("m{cmid}").as_bytes());
    }
    g.send(alice, inbox(20), 7, b"dm");
    // 6 room messages: ack + push to alice each; the DM: ack only.
    g.collect(6 * 2 + 1);
    let bob = Sess::new(2, 3, 20, 1);
    g.open(bob);
    g.sync(bob, 77, &[(5, 4), (6, 0), (inbox(20), 0)]);
    let got = g.collect(3 + 1);
    let pushes: Vec<(u64, u64)> = got[..3]
        .iter()
        .map(|g| g.push())
        .map(|p| (p.channel, p.msg_id))
        .collect();
    let mut sorted = pushes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![(5, 5), (5, 6), (inbox(20), 1)]);
    let room5: Vec<u64> = pushes.iter().filter(|p| p.0 == 5).map(|p| p.1).collect();
    assert_eq!(room5, vec![5, 6], "in order");
    assert_eq!(
        (got[3].kind, got[3].seq),
        (Kind::SyncAck, 77),
        "SYNC_ACK last"
    );
    let heads: Vec<(u64, u64)> = pb::SyncAck::decode_from(&got[3].body)
        .heads
        .iter()
        .map(|h| (h.channel, h.msg_id))
        .collect();
    assert_eq!(heads, vec![(5, 6), (6, 0), (7, 0), (inbox(20), 1)]);
    // No PUSH of that SYNC trails its ACK: a second SYNC at the heads just
    // reported reaches every shard after the first one's parts and pushes
    // nothing, so its ACK is next (common: "Barriers, not silence").
    g.sync(bob, 78, &heads);
    g.expect_next(bob, Kind::SyncAck, 78);
    assert_eq!(logic.metric("logic_sync_requests_total"), 2);
}

#[test]
fn duplicate_login_on_a_second_gateway_kicks_the_first_and_stale_close_is_fenced() {
    let logic = Logic::start(&[]);
    let mut g1 = logic.gateway(1);
    let mut g2 = logic.gateway(2);
    let old = Sess::new(1, 1, 10, 1);
    g1.open(old);
    joined(&mut g1, old, 5);
    let new = Sess::new(1, 1, 10, 1);
    g2.open(new);
    match g1.recv() {
        LinkMsg::Kick { session, reason } => {
            assert_eq!(session, old.s);
            assert_eq!(reason, pb::KickReason::DuplicateLogin as i32);
        }
        other => panic!("expected a Kick, got {other:?}"),
    }
    // The first gateway's late Close must not remove the new session.
    g1.close(old);
    let other = Sess::new(2, 2, 11, 1);
    g1.open(other);
    joined(&mut g1, other, 5);
    g1.send(other, 5, 1, b"still there?");
    let got = g2.collect(1);
    assert_eq!((got[0].target, got[0].push().msg_id), (new.s, 1));
    // Only the new session got it (once): the room's shard answers this
    // JOIN after that PUSH (common: "Barriers, not silence").
    assert_eq!(g2.join_barrier(new, 5, 2), 1);
    assert_eq!(logic.metric("logic_sessions_routed"), 2);
}

#[test]
fn a_closed_link_drops_its_gateways_sessions() {
    let logic = Logic::start(&[]);
    let mut g1 = logic.gateway(1);
    let mut g2 = logic.gateway(2);
    let a = Sess::new(1, 1, 10, 1);
    let b = Sess::new(1, 1, 11, 1);
    g1.open(a);
    joined(&mut g1, a, 5);
    g2.open(b);
    joined(&mut g2, b, 5);
    drop(g2);
    logic.metric_eventually("logic_link_connections", 1);
    logic.metric_eventually("logic_sessions_routed", 1);
    // The same gateway reconnects but does not re-announce b.
    let mut g2 = logic.gateway(2);
    g1.send(a, 5, 1, b"x");
    assert_eq!(g1.collect(2).len(), 2);
    // Nothing for b: "x" was acked, so the room's shard answers a JOIN from
    // another session of g2 after its PUSHes (common: "Barriers, not
    // silence").
    let c = Sess::new(2, 1, 12, 1);
    g2.open(c);
    assert_eq!(g2.join_barrier(c, 5, 1), 1);
    // After the re-announce it is routed again. b's JOIN reaches the room's
    // shard after the presence its Reopen sent there, so the next SEND
    // finds it.
    g2.reopen(b);
    assert_eq!(g2.join_barrier(b, 5, 2), 1);
    g1.send(a, 5, 2, b"y");
    let got = g2.collect(2);
    assert_eq!(to(&got, b, Kind::Push)[0].push().msg_id, 2);
    assert_eq!(to(&got, c, Kind::Push)[0].push().msg_id, 2);
}

#[test]
fn a_reannounce_loses_to_a_login_made_while_its_link_was_down() {
    let logic = Logic::start(&[]);
    let mut g1 = logic.gateway(1);
    let mut g2 = logic.gateway(2);
    let on_g1 = Sess::new(1, 1, 10, 1);
    g1.open(on_g1);
    joined(&mut g1, on_g1, 5);
    drop(g1);
    logic.metric_eventually("logic_sessions_routed", 0);
    let on_g2 = Sess::new(1, 1, 10, 1);
    g2.open(on_g2);
    let mut g1 = logic.gateway(1);
    g1.reopen(on_g1);
    match g1.recv() {
        LinkMsg::Kick { session, reason } => {
            assert_eq!(
                (session, reason),
                (on_g1.s, pb::KickReason::DuplicateLogin as i32)
            );
        }
        other => panic!("expected a Kick, got {other:?}"),
    }
    // The login on g2 was not kicked: uin 10's shard decided the Reopen
    // (its Kick was read above) before it answers this SYNC, so a Kick for
    // on_g2 would come first (common: "Barriers, not silence").
    g2.sync(on_g2, 9, &[]);
    g2.expect_next(on_g2, Kind::SyncAck, 9);
    g2.send(on_g2, 5, 1, b"mine");
    let got = g2.collect(2);
    assert_eq!(to(&got, on_g2, Kind::Push)[0].push().msg_id, 1);
}

#[test]
fn ping_is_answered_and_protocol_errors_close_the_link() {
    let logic = Logic::start(&[]);
    let mut g = logic.gateway(1);
    let mut b = bytes::BytesMut::new();
    link::encode_ping(&mut b, 99);
    g.write(&b);
    assert_eq!(g.recv(), LinkMsg::Pong { nonce: 99 });

    let mut b = bytes::BytesMut::new();
    link::encode_hello(&mut b, 1, 1);
    g.write(&b);
    g.expect_closed();

    let mut talks_back = logic.gateway(2);
    let mut b = bytes::BytesMut::new();
    link::encode_deliver(&mut b, &[], b"");
    talks_back.write(&b);
    talks_back.expect_closed();

    let mut raw = Gateway::raw(logic.addr);
    raw.open(Sess::new(1, 1, 10, 1));
    raw.expect_closed();
    logic.metric_eventually("logic_link_connections", 0);
}

#[test]
fn sigterm_and_sigint_exit_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut logic = Logic::start(&[]);
        let mut g = logic.gateway(1);
        g.open(Sess::new(1, 1, 10, 1));
        joined(&mut g, Sess::new(1, 1, 10, 1), 5);
        let exit = logic.signal_and_wait(signal);
        assert!(exit.success(), "SIG{signal}: {exit:?}");
    }
}
