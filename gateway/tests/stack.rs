//! The whole stack on loopback: a real logic server and two real gateway
//! processes, clients speaking PROTOCOL.md. Needs the `logic` binary, which
//! `cargo test --workspace` builds. The last test runs two logic nodes on
//! a real redis-server (issue 14).

mod support;
// The logic tests' redis-server harness, shared rather than copied.
#[path = "../../logic/tests/redis_support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::Kind;
use proto::pb::{self, NetworkType, Status};
use support::{Client, Gateway, Logic};

const INBOX: u64 = proto::INBOX_BIT;

fn stack() -> (Logic, Gateway, Gateway) {
    let logic = Logic::start("127.0.0.1:0");
    let addr = logic.addr.to_string();
    let a = Gateway::start(&[
        "--threads",
        "2",
        "--logic",
        &addr,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let b = Gateway::start(&[
        "--threads",
        "2",
        "--logic",
        &addr,
        "--metrics",
        "127.0.0.1:0",
    ]);
    wait_linked(&a);
    wait_linked(&b);
    (logic, a, b)
}

/// Waits until the gateway's uplink reports the link up.
fn wait_linked(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("millgate_uplink_connected") != 1 {
        assert!(Instant::now() < deadline, "uplink never connected");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
}

fn send(c: &mut Client, seq: u32, channel: u64, client_msg_id: u64, body: &str) -> pb::SendAck {
    let req = pb::SendReq {
        channel,
        client_msg_id,
        body: Bytes::copy_from_slice(body.as_bytes()),
    };
    c.send(Kind::Send, seq, &req);
    loop {
        let f = c.recv().expect("SEND_ACK");
        if f.kind == Kind::SendAck {
            assert_eq!(f.seq, seq);
            return prost::Message::decode(f.body).unwrap();
        }
        // A PUSH of our own message may come before the ack.
        assert_eq!(f.kind, Kind::Push, "{f:?}");
    }
}

/// One round trip through the logic tier on `c`'s own link: once it is
/// answered, the session's Open (queued before it) has been routed. Fails
/// if the logic tier has not answered within 10 s.
fn routed(c: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    c.send(Kind::Sync, 77, &pb::SyncReq::default());
    loop {
        let f = c.recv().expect("SYNC_ACK");
        match f.kind {
            Kind::SyncAck if f.seq == 77 => return,
            // The worker has not heard LinkUp yet: ask again, shortly.
            Kind::Error if f.seq == 77 => {
                assert!(
                    Instant::now() < deadline,
                    "SYNC still refused after 10 s: {f:?}"
                );
                std::thread::sleep(Duration::from_millis(10)); // polling: LinkUp reaches the worker unseen by the client
                c.send(Kind::Sync, 77, &pb::SyncReq::default());
            }
            _ => assert!(Instant::now() < deadline, "no SYNC_ACK within 10 s"),
        }
    }
}

fn join(c: &mut Client, seq: u32, channel: u64) -> pb::JoinAck {
    c.send(Kind::Join, seq, &pb::Join { channel });
    c.expect(Kind::JoinAck, seq)
}

/// Reads frames until `n` PUSHes for `channel` arrived, ignoring acks.
fn pushes(c: &mut Client, channel: u64, n: usize) -> Vec<pb::Push> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = c.recv().expect("PUSH");
        if f.kind == Kind::Push {
            let p: pb::Push = prost::Message::decode(f.body).unwrap();
            assert_eq!(f.seq, 0, "pushes carry seq 0");
            if p.channel == channel {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_room_across_two_gateways_gets_every_push_once_in_order() {
    let (_logic, ga, gb) = stack();
    let room = 500;
    let mut alice = Client::connect(ga.addr);
    alice.login(1, 1, NetworkType::Wifi);
    let mut bob = Client::connect(gb.addr);
    bob.login(2, 1, NetworkType::Wifi);
    let mut bob_tab = Client::connect(ga.addr); // bob's second device
    bob_tab.login(2, 2, NetworkType::Wifi);
    for (c, seq) in [(&mut alice, 2), (&mut bob, 2), (&mut bob_tab, 2)] {
        let ack = join(c, seq, room);
        assert_eq!((ack.status, ack.channel), (Status::Ok as i32, room));
    }
    // Pipelined: 20 SENDs, then 20 acks and 20 pushes in any interleaving.
    for i in 1..=20u64 {
        let req = pb::SendReq {
            channel: room,
            client_msg_id: i,
            body: Bytes::from(format!("m{i}")),
        };
        alice.send(Kind::Send, 100 + i as u32, &req);
    }
    let (mut acks, mut own) = (Vec::new(), Vec::new());
    while acks.len() < 20 || own.len() < 20 {
        let f = alice.recv().expect("ack or push");
        match f.kind {
            Kind::SendAck => acks.push((f.seq, prost::Message::decode(f.body).unwrap())),
            Kind::Push => own.push(prost::Message::decode(f.body).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    for (seq, ack) in acks {
        let ack: pb::SendAck = ack;
        let i = u64::from(seq - 100);
        assert_eq!(ack.status, Status::Ok as i32);
        assert_eq!(
            (ack.msg_id, ack.client_msg_id),
            (i, i),
            "ids follow send order"
        );
    }
    let own: Vec<pb::Push> = own;
    let ids: Vec<u64> = own.iter().map(|p| p.msg_id).collect();
    assert_eq!(
        ids,
        (1..=20).collect::<Vec<_>>(),
        "the sender gets its own pushes, in order"
    );
    for c in [&mut bob, &mut bob_tab] {
        let got = pushes(c, room, 20);
        let ids: Vec<u64> = got.iter().map(|p| p.msg_id).collect();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        assert!(got.iter().all(|p| p.from_uin == 1 && p.from_device == 1));
        assert_eq!(got[4].body, Bytes::from_static(b"m5"));
    }
    // Nothing more (each PUSH exactly once): a heartbeat's ack comes next.
    for c in [&mut alice, &mut bob, &mut bob_tab] {
        c.send(Kind::Heartbeat, 999, &pb::Heartbeat {});
        let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, 999);
    }
}

#[test]
fn direct_messages_membership_and_dedup() {
    let (_logic, ga, gb) = stack();
    let mut alice = Client::connect(ga.addr);
    alice.login(11, 1, NetworkType::Wifi);
    let mut bob = Client::connect(gb.addr);
    bob.login(12, 1, NetworkType::Wifi);
    routed(&mut bob);

    // A DM to bob's inbox: pushed to bob only; the ack is alice's record.
    let ack = send(&mut alice, 2, INBOX | 12, 1, "hi bob");
    assert_eq!((ack.status, ack.msg_id), (Status::Ok as i32, 1));
    let got = pushes(&mut bob, INBOX | 12, 1);
    assert_eq!(
        (got[0].from_uin, got[0].body.as_ref()),
        (11, &b"hi bob"[..])
    );

    // Rooms need a JOIN; someone else's inbox cannot be joined or left.
    let ack = send(&mut alice, 3, 77, 2, "not joined");
    assert_eq!(ack.status, Status::NotMember as i32);
    assert_eq!(
        join(&mut alice, 4, INBOX | 12).status,
        Status::NotMember as i32
    );
    alice.send(
        Kind::Leave,
        5,
        &pb::Leave {
            channel: INBOX | 12,
        },
    );
    let leave: pb::LeaveAck = alice.expect(Kind::LeaveAck, 5);
    assert_eq!(leave.status, Status::NotMember as i32);

    // A retry after a lost ack: DUPLICATE with the original id, nothing
    // stored (the next message gets the next id).
    assert_eq!(join(&mut alice, 6, 77).status, Status::Ok as i32);
    let first = send(&mut alice, 7, 77, 10, "once");
    assert_eq!((first.status, first.msg_id), (Status::Ok as i32, 1));
    let again = send(&mut alice, 8, 77, 10, "once");
    assert_eq!((again.status, again.msg_id), (Status::Duplicate as i32, 1));
    let older = send(&mut alice, 9, 77, 9, "older");
    assert_eq!((older.status, older.msg_id), (Status::Duplicate as i32, 0));
    let next = send(&mut alice, 10, 77, 11, "next");
    assert_eq!((next.status, next.msg_id), (Status::Ok as i32, 2));
    let leave = {
        alice.send(Kind::Leave, 11, &pb::Leave { channel: 77 });
        loop {
            let f = alice.recv().unwrap();
            if f.kind == Kind::LeaveAck {
                break prost::Message::decode(f.body).unwrap();
            }
        }
    };
    let leave: pb::LeaveAck = leave;
    assert_eq!((leave.status, leave.channel), (Status::Ok as i32, 77));
}

#[test]
fn an_offline_client_syncs_exactly_what_it_missed() {
    let (_logic, ga, gb) = stack();
    let room = 42;
    let mut alice = Client::connect(ga.addr);
    alice.login(21, 1, NetworkType::Wifi);
    assert_eq!(join(&mut alice, 2, room).status, Status::Ok as i32);
    let mut carol = Client::connect(gb.addr);
    carol.login(22, 1, NetworkType::Wifi);
    assert_eq!(join(&mut carol, 2, room).status, Status::Ok as i32);
    for i in 1..=3 {
        send(&mut alice, 10 + i, room, u64::from(i), "seen");
    }
    assert_eq!(pushes(&mut carol, room, 3).last().unwrap().msg_id, 3);
    drop(carol); // offline
    for i in 4..=8 {
        send(
            &mut alice,
            10 + i,
            room,
            u64::from(i),
            &format!("missed {i}"),
        );
    }
    send(&mut alice, 30, INBOX | 22, 9, "dm while away");

    let mut carol = Client::connect(gb.addr);
    carol.login(22, 1, NetworkType::Wifi);
    let heads = vec![pb::ChannelHead {
        channel: room,
        msg_id: 3,
    }];
    carol.send(Kind::Sync, 5, &pb::SyncReq { heads });
    let mut got = Vec::new();
    let ack: pb::SyncAck = loop {
        let f = carol.recv().expect("sync answer");
        match f.kind {
            Kind::Push => got.push(prost::Message::decode(f.body).unwrap()),
            Kind::SyncAck => {
                assert_eq!(f.seq, 5);
                break prost::Message::decode(f.body).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    let got: Vec<pb::Push> = got;
    let ids: Vec<u64> = got
        .iter()
        .filter(|p| p.channel == room)
        .map(|p| p.msg_id)
        .collect();
    assert_eq!(ids, vec![4, 5, 6, 7, 8]);
    assert_eq!(got[0].body, Bytes::from_static(b"missed 4"));
    let mut heads: Vec<(u64, u64)> = ack.heads.iter().map(|h| (h.channel, h.msg_id)).collect();
    heads.sort_unstable();
    assert_eq!(heads, vec![(room, 8), (INBOX | 22, 1)]);
}

#[test]
fn duplicate_login_on_another_gateway_kicks_the_first() {
    let (_logic, ga, gb) = stack();
    let mut first = Client::connect(ga.addr);
    first.login(31, 7, NetworkType::Wifi);
    // Make sure the first session is routed before the second logs in.
    assert_eq!(join(&mut first, 2, 9).status, Status::Ok as i32);
    let mut second = Client::connect(gb.addr);
    second.login(31, 7, NetworkType::Wifi);
    let kick: pb::Kick = first.expect(Kind::Kick, 0);
    assert_eq!(kick.reason, pb::KickReason::DuplicateLogin as i32);
    first.expect_closed();
    // The new session is the one routed: it can send to its own inbox.
    let ack = send(&mut second, 3, INBOX | 31, 1, "me");
    assert_eq!(ack.status, Status::Ok as i32);
    // Another device of the same uin is independent.
    let mut other = Client::connect(ga.addr);
    other.login(31, 8, NetworkType::Wifi);
    other.send(Kind::Heartbeat, 2, &pb::Heartbeat {});
    let _: pb::HeartbeatAck = other.expect(Kind::HeartbeatAck, 2);
}

/// Holds a loopback port for as long as it lives: bound with SO_REUSEPORT
/// but never listening, so connections to it are refused until a logic
/// server started with `--reuse-port true` binds the same address.
fn hold_port() -> (socket2::Socket, String) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&any.into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap().to_string();
    (s, addr)
}

#[test]
fn logic_down_then_back_without_clients_reconnecting() {
    // The restarted server must be found at the same address: the port is
    // held by this test throughout, never released for anyone to take.
    let (_hold, listen) = hold_port();
    let reuse = ["--reuse-port", "true"];
    let logic = Logic::start_with(&listen, &reuse);
    assert_eq!(logic.addr.to_string(), listen);
    let gw = Gateway::start(&[
        "--threads",
        "2",
        "--logic",
        &listen,
        "--metrics",
        "127.0.0.1:0",
    ]);
    wait_linked(&gw);
    let mut alice = Client::connect(gw.addr);
    alice.login(41, 1, NetworkType::Wifi);
    let mut bob = Client::connect(gw.addr);
    bob.login(42, 1, NetworkType::Wifi);
    routed(&mut bob);
    assert_eq!(
        send(&mut alice, 2, INBOX | 42, 1, "before").status,
        Status::Ok as i32
    );
    pushes(&mut bob, INBOX | 42, 1);

    drop(logic);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("millgate_uplink_connected") != 0 {
        assert!(Instant::now() < deadline, "uplink never noticed");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
    // Sessions stay; heartbeats work; backend requests say UNAVAILABLE.
    alice.send(Kind::Heartbeat, 3, &pb::Heartbeat {});
    let _: pb::HeartbeatAck = alice.expect(Kind::HeartbeatAck, 3);
    assert_eq!(
        send(&mut alice, 4, INBOX | 42, 2, "down").status,
        Status::Unavailable as i32
    );
    alice.send(Kind::Sync, 5, &pb::SyncReq::default());
    assert_eq!(alice.expect_error(5), pb::error::ErrorCode::Unavailable);

    let _logic = Logic::start_with(&listen, &reuse);
    wait_linked(&gw);
    // Bob does not reconnect; his round trip shows his re-announce landed.
    routed(&mut bob);
    // Re-announced: bob is routed again, without reconnecting.
    assert_eq!(
        send(&mut alice, 6, INBOX | 42, 2, "after").status,
        Status::Ok as i32
    );
    let got = pushes(&mut bob, INBOX | 42, 1);
    assert_eq!(got[0].body, Bytes::from_static(b"after"));
}

#[test]
fn a_receiver_that_stops_reading_is_kicked_and_syncs_what_it_missed() {
    let logic = Logic::start("127.0.0.1:0");
    let gw = Gateway::start(&[
        "--logic",
        &logic.addr.to_string(),
        "--metrics",
        "127.0.0.1:0",
        "--send-buffer",
        "4096",
        "--write-budget",
        "65536",
        "--send-rate",
        "100000",
        "--send-burst",
        "100000",
    ]);
    wait_linked(&gw);
    let mut alice = Client::connect(gw.addr);
    alice.login(41, 1, NetworkType::Wifi);
    routed(&mut alice);
    let mut bob = Client::connect(gw.addr);
    bob.login(42, 1, NetworkType::Wifi);
    routed(&mut bob);

    // Bob reads nothing while Alice sends him 16 KiB messages: once the
    // kernel buffers are full, the gateway queues for him until the
    // budget is passed. A few MiB is far more than loopback buffers hold.
    let body = "x".repeat(16 * 1024);
    let slow = "millgate_closes_total{reason=\"slow_consumer\"}";
    let mut sent = 0;
    while gw.metric(slow) == 0 {
        sent += 1;
        assert!(sent <= 400, "never kicked after {sent} messages");
        let ack = send(&mut alice, sent as u32, INBOX | 42, sent, &body);
        assert_eq!(ack.status, Status::Ok as i32);
        assert_eq!(ack.msg_id, sent);
    }

    // What Bob got: pushes from 1 up, in order, then the KICK, then EOF.
    let mut last = 0;
    loop {
        let f = bob.recv().expect("a KICK before the end");
        match f.kind {
            Kind::Push => {
                let p: pb::Push = prost::Message::decode(f.body).unwrap();
                assert_eq!(p.msg_id, last + 1);
                last = p.msg_id;
            }
            Kind::Kick => {
                let k: pb::Kick = prost::Message::decode(f.body).unwrap();
                assert_eq!(k.reason, pb::KickReason::SlowConsumer as i32);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    bob.expect_closed();
    assert!(last <= sent);
    // Sent after the kick: missed for certain.
    for extra in 1..=3 {
        let n = sent + extra;
        let ack = send(&mut alice, n as u32, INBOX | 42, n, "after the kick");
        assert_eq!((ack.status, ack.msg_id), (Status::Ok as i32, n));
    }
    let sent = sent + 3;

    // The rest waits in the store: a SYNC from the last id seen gets it.
    let mut bob = Client::connect(gw.addr);
    bob.login(42, 1, NetworkType::Wifi);
    let heads = vec![pb::ChannelHead {
        channel: INBOX | 42,
        msg_id: last,
    }];
    bob.send(Kind::Sync, 9, &pb::SyncReq { heads });
    let mut ids = Vec::new();
    loop {
        let f = bob.recv().expect("sync answer");
        match f.kind {
            Kind::Push => ids.push(
                prost::Message::decode(f.body)
                    .map(|p: pb::Push| p.msg_id)
                    .unwrap(),
            ),
            Kind::SyncAck => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, (last + 1..=sent).collect::<Vec<_>>());
}

/// Known failure, not yet diagnosed (issue 14). With logs on: node A
/// closes the gateway's link (the gateway reads EOF) about 45 ms after
/// alice's Open reaches it, with nothing logged by A, long before the test
/// kills A; the gateway moves to B as designed, alice's SEND goes through
/// B (msg 2) and she received msg 1 there, but the PUSH of bob's next
/// message (msg 3) never reaches her. Run with
/// `cargo test --release -p millgate-gateway --test stack -- --ignored`.
#[test]
#[ignore = "issue 14: PUSHes stop reaching a session moved between Redis nodes"]
fn on_redis_nodes_a_gateway_whose_node_dies_carries_on_through_the_other() {
    let redis = redis_support::Redis::start();
    let url = redis.url();
    let a = Logic::start_with("127.0.0.1:0", &["--redis", &url]);
    // Nothing listens on B's port yet, so the gateway links to A whatever
    // node it starts at; B comes up afterwards.
    let b_addr = format!("127.0.0.1:{}", redis_support::free_port());
    let logic = format!("{},{b_addr}", a.addr);
    let gw = Gateway::start(&["--logic", &logic, "--metrics", "127.0.0.1:0"]);
    wait_linked(&gw);
    let _b = Logic::start_with(&b_addr, &["--redis", &url]);
    let gb = Gateway::start(&["--logic", &b_addr, "--metrics", "127.0.0.1:0"]);
    wait_linked(&gb);

    let room = 600;
    let mut alice = Client::connect(gw.addr);
    alice.login(1, 1, NetworkType::Wifi);
    routed(&mut alice);
    assert_eq!(join(&mut alice, 2, room).status, Status::Ok as i32);
    let mut bob = Client::connect(gb.addr);
    bob.login(2, 1, NetworkType::Wifi);
    routed(&mut bob);
    assert_eq!(join(&mut bob, 2, room).status, Status::Ok as i32);
    assert_eq!(send(&mut bob, 3, room, 1, "before").msg_id, 1);
    assert_eq!(pushes(&mut alice, room, 1)[0].msg_id, 1);

    // Alice's node dies. Her gateway moves to B and re-announces her
    // there; she retries her SEND (UNAVAILABLE while it moves) and never
    // reconnects.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 10;
    loop {
        let ack = send(&mut alice, seq, room, 1, "from alice");
        if ack.status == Status::Ok as i32 {
            assert_eq!(ack.msg_id, 2, "contiguous across nodes (rule 6)");
            break;
        }
        assert_eq!(ack.status, Status::Unavailable as i32, "{ack:?}");
        assert!(Instant::now() < deadline, "still UNAVAILABLE after 10 s");
        seq += 1;
        std::thread::sleep(Duration::from_millis(20)); // pacing retries: the client sees no event for the move
    }
    // Bob, through B, reaches her on her new node. (`send` skips PUSHes
    // that come before its ack, so only what follows is counted.)
    assert_eq!(send(&mut bob, 4, room, 2, "after").msg_id, 3);
    for c in [&mut alice, &mut bob] {
        let mut seen = Vec::new();
        while seen.last() != Some(&3) {
            seen.push(pushes(c, room, 1)[0].msg_id);
        }
        assert!(seen.is_sorted() && seen.len() <= 2, "{seen:?}");
    }
}
