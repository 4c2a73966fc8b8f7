//! Logic nodes sharing one real Redis (`logic --redis URL`, issue 14;
//! `logic/REDIS.md`): two `logic` processes on one `redis-server`, fake
//! gateways speaking the link protocol to each (`common`), and the
//! PROTOCOL.md rules checked across the nodes.
//!
//! Every read has a timeout (`common::ANSWER_TIMEOUT`), so a missing
//! answer fails instead of hanging; "answered within" is measured.

mod common;
mod redis_support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, Got, Logic, Sess, inbox, to};
use prost::Message;
use proto::codec::Kind;
use proto::link::LinkMsg;
use proto::pb::{self, Status};
use redis_support::{Redis, free_port};

fn node_at(url: &str) -> Logic {
    Logic::start(&["--redis", url, "--redis-timeout-ms", "300"])
}

fn node(r: &Redis) -> Logic {
    node_at(&r.url())
}

fn join_ok(g: &mut Gateway, s: Sess, room: u64, seq: u32) -> u64 {
    g.join(s, room, seq);
    let got = g.expect_next(s, Kind::JoinAck, seq);
    let ack = pb::JoinAck::decode(got.body).expect("join ack");
    assert_eq!(ack.status, Status::Ok as i32, "{ack:?}");
    ack.newest_msg_id
}

fn sync_ack(
    g: &mut Gateway,
    s: Sess,
    seq: u32,
    heads: &[(u64, u64)],
) -> (Vec<Got>, Vec<(u64, u64)>) {
    g.sync(s, seq, heads);
    let mut pushes = Vec::new();
    loop {
        let LinkMsg::Deliver { targets, frame } = g.recv() else {
            panic!("expected Deliver");
        };
        let mut got = Vec::new();
        common::unpack(&mut got, &targets, &frame);
        for x in got {
            if x.kind == Kind::SyncAck && x.seq == seq {
                let ack = pb::SyncAck::decode(x.body).expect("sync ack");
                let heads = ack.heads.iter().map(|h| (h.channel, h.msg_id)).collect();
                return (pushes, heads);
            }
            pushes.push(x);
        }
    }
}

/// Rule 6 and rule 8 across nodes: four senders, two through each node,
/// SEND to one room at once; the ids are exactly 1..=N, and every member's
/// session, on either node, gets every PUSH once, in id order.
#[test]
fn concurrent_sends_through_two_nodes_number_contiguously_and_push_in_order() {
    let r = Redis::start();
    concurrent_sends(&r.url());
}

fn concurrent_sends(url: &str) {
    let (a, b) = (node_at(url), node_at(url));
    let (mut ga, mut gb) = (a.gateway(1), b.gateway(2));
    let room = 77;
    let senders_a = [Sess::new(1, 1, 101, 1), Sess::new(2, 1, 102, 1)];
    let senders_b = [Sess::new(1, 1, 103, 1), Sess::new(2, 1, 104, 1)];
    let reader = Sess::new(3, 1, 105, 1); // on node B, sends nothing
    for s in senders_a {
        ga.open(s);
        join_ok(&mut ga, s, room, 900);
    }
    for s in senders_b.iter().chain([&reader]) {
        gb.open(*s);
        join_ok(&mut gb, *s, room, 900);
    }
    const PER: u64 = 60;
    let total = PER * 4;
    for i in 1..=PER {
        for s in senders_a {
            ga.send(s, room, i, format!("{}-{i}", s.uin).as_bytes());
        }
        for s in senders_b {
            gb.send(s, room, i, format!("{}-{i}", s.uin).as_bytes());
        }
    }
    // Node A's gateway: its 2 senders' acks + every push to each of them.
    let got_a = ga.collect((PER * 2 + total * 2) as usize);
    let got_b = gb.collect((PER * 2 + total * 3) as usize);
    let mut ids: Vec<u64> = got_a
        .iter()
        .chain(&got_b)
        .filter(|g| g.kind == Kind::SendAck)
        .map(|g| {
            let ack = g.send_ack();
            assert_eq!(ack.status, Status::Ok as i32, "{ack:?}");
            ack.msg_id
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=total).collect::<Vec<_>>(),
        "contiguous from 1, no gaps, no dups"
    );
    for (got, s) in senders_a
        .iter()
        .map(|s| (&got_a, s))
        .chain(senders_b.iter().chain([&reader]).map(|s| (&got_b, s)))
    {
        let pushes: Vec<u64> = to(got, *s, Kind::Push)
            .iter()
            .map(|g| g.push().msg_id)
            .collect();
        assert_eq!(
            pushes,
            (1..=total).collect::<Vec<_>>(),
            "session of uin {} gets every PUSH once, in id order",
            s.uin
        );
    }
}

/// Rule 7 across nodes: the original's node dies after storing; the retry
/// through the other node is DUPLICATE with the original id, and nothing
/// is stored twice. Also when the device's latest never got committed
/// (the node died between storing and the commit): the channel's record
/// catches the retry.
#[test]
fn a_retry_through_the_other_node_is_a_duplicate_with_the_original_id() {
    let r = Redis::start();
    retry_through_other_node(&r.url(), &mut r.con());
}

fn retry_through_other_node(url: &str, con: &mut dyn redis::ConnectionLike) {
    let (mut a, b) = (node_at(url), node_at(url));
    let (mut ga, mut gb) = (a.gateway(1), b.gateway(2));
    let sender = Sess::new(1, 1, 201, 7);
    let owner = Sess::new(2, 1, 202, 1);
    gb.open(owner);
    sync_ack(&mut gb, owner, 1, &[]);
    ga.open(sender);
    ga.send(sender, inbox(202), 10, b"first");
    let first = ga.collect(1)[0].send_ack();
    assert_eq!((first.status, first.msg_id), (Status::Ok as i32, 1));
    ga.send(sender, inbox(202), 11, b"second");
    assert_eq!(ga.collect(1)[0].send_ack().msg_id, 2);
    let _ = a.signal_and_wait("KILL");
    // The device's latest lost its commit of 11 (as if node A died
    // between the SEND script and the commit).
    let _: () = redis::cmd("HSET")
        .arg("mg:{u201}:d")
        .arg(7)
        .arg(format!("{:020}:1", 10))
        .query(con)
        .expect("hset");
    let moved = Sess::new(9, 2, 201, 7);
    gb.open(moved);
    // One at a time: each answer depends on the commits before it.
    let mut by_cmid: HashMap<u64, (i32, u64)> = HashMap::new();
    for (cmid, body) in [(11, "second again"), (10, "first again"), (12, "third")] {
        gb.send(moved, inbox(202), cmid, body.as_bytes());
        let ack = loop {
            let g = gb.collect(1).remove(0);
            if g.kind == Kind::SendAck {
                break g.send_ack();
            }
        };
        by_cmid.insert(ack.client_msg_id, (ack.status, ack.msg_id));
    }
    assert_eq!(
        by_cmid[&11],
        (Status::Duplicate as i32, 2),
        "caught by the channel record"
    );
    assert_eq!(
        by_cmid[&10],
        (Status::Duplicate as i32, 0),
        "below the latest"
    );
    assert_eq!(
        by_cmid[&12],
        (Status::Ok as i32, 3),
        "nothing was stored twice"
    );
    let (_, heads) = sync_ack(&mut gb, owner, 2, &[(inbox(202), 0)]);
    assert!(heads.contains(&(inbox(202), 3)), "{heads:?}");
}

/// Rule 9 through either node: the same retained messages, in order, and
/// the same heads, whichever node answers.
#[test]
fn sync_through_either_node_replays_the_same_messages() {
    let r = Redis::start();
    sync_either_node(&r.url());
}

fn sync_either_node(url: &str) {
    let (a, b) = (node_at(url), node_at(url));
    let (mut ga, mut gb) = (a.gateway(1), b.gateway(2));
    let s = Sess::new(1, 1, 301, 1);
    ga.open(s);
    join_ok(&mut ga, s, 5, 1);
    for i in 1..=5 {
        ga.send(s, 5, i, format!("m{i}").as_bytes());
    }
    ga.collect(10); // 5 acks, 5 pushes
    let t = Sess::new(1, 1, 301, 2); // another device of the user, on B
    gb.open(t);
    let (pa, ha) = sync_ack(&mut ga, s, 50, &[(5, 2)]);
    let (pb_, hb) = sync_ack(&mut gb, t, 51, &[(5, 2)]);
    let ids = |p: &[Got]| -> Vec<u64> { p.iter().map(|g| g.push().msg_id).collect() };
    assert_eq!(ids(&pa), vec![3, 4, 5]);
    assert_eq!(ids(&pb_), vec![3, 4, 5]);
    assert_eq!(ha, hb);
    assert!(
        ha.contains(&(5, 5)) && ha.contains(&(inbox(301), 0)),
        "{ha:?}"
    );
    let bodies: Vec<Vec<u8>> = pb_.iter().map(|g| g.push().body.to_vec()).collect();
    assert_eq!(bodies, vec![b"m3".to_vec(), b"m4".to_vec(), b"m5".to_vec()]);
}

/// Rule 3 across nodes: a newer login through node B kicks the session on
/// node A's gateway; an older login announced later (a race) is the one
/// kicked.
#[test]
fn the_newest_login_wins_across_nodes() {
    let r = Redis::start();
    newest_login_wins(&r.url());
}

fn newest_login_wins(url: &str) {
    let (a, b) = (node_at(url), node_at(url));
    let (mut ga, mut gb) = (a.gateway(1), b.gateway(2));
    let old = Sess::new(1, 1, 401, 1);
    let new = Sess::new(2, 2, 401, 1);
    ga.open(old);
    sync_ack(&mut ga, old, 1, &[]);
    gb.open(new);
    match ga.recv() {
        LinkMsg::Kick { session, reason } => {
            assert_eq!(session, old.s);
            assert_eq!(reason, pb::KickReason::DuplicateLogin as i32);
        }
        other => panic!("expected a Kick of the older session, got {other:?}"),
    }
    // An older login that arrives last loses.
    let mut stale = Sess::new(3, 3, 401, 1);
    stale.login_ms = old.login_ms - 1;
    ga.open(stale);
    match ga.recv() {
        LinkMsg::Kick { session, .. } => assert_eq!(session, stale.s),
        other => panic!("expected the stale login kicked, got {other:?}"),
    }
    // The newest still works and is the one pushed to.
    let (_, heads) = sync_ack(&mut gb, new, 2, &[]);
    assert!(heads.contains(&(inbox(401), 0)));
}

/// Rule 13: with Redis gone, SEND, JOIN and LEAVE are answered UNAVAILABLE
/// and SYNC with ERROR(UNAVAILABLE), quickly, never left hanging; once
/// Redis is back the node serves again without a restart.
#[test]
fn redis_stopped_answers_unavailable_then_recovers() {
    let mut r = Redis::start();
    let a = node(&r);
    let mut ga = a.gateway(1);
    let s = Sess::new(1, 1, 501, 1);
    ga.open(s);
    join_ok(&mut ga, s, 9, 1);
    r.stop();
    let t0 = Instant::now();
    ga.send(s, 9, 1, b"x");
    let ack = ga.collect(1)[0].send_ack();
    assert_eq!(ack.status, Status::Unavailable as i32, "{ack:?}");
    ga.join(s, 10, 2);
    let j = pb::JoinAck::decode(ga.expect_next(s, Kind::JoinAck, 2).body).expect("ack");
    assert_eq!(j.status, Status::Unavailable as i32);
    ga.leave(s, 9, 3);
    let l = pb::LeaveAck::decode(ga.expect_next(s, Kind::LeaveAck, 3).body).expect("ack");
    assert_eq!(l.status, Status::Unavailable as i32);
    ga.sync(s, 4, &[]);
    let e = ga.expect_next(s, Kind::Error, 4);
    let e = pb::Error::decode(e.body).expect("error");
    assert_eq!(e.code, pb::error::ErrorCode::Unavailable as i32);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "four answers took {:?}",
        t0.elapsed()
    );
    r.restart(); // empty: no persistence in tests
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut cmid = 10;
    loop {
        // The membership was lost with the data: send to an inbox.
        ga.send(s, inbox(501), cmid, b"back");
        let ack = loop {
            let g = ga.collect(1).remove(0);
            if g.kind == Kind::SendAck {
                break g.send_ack();
            }
        };
        if ack.status == Status::Ok as i32 {
            assert_eq!(ack.msg_id, 1);
            break;
        }
        assert_eq!(ack.status, Status::Unavailable as i32);
        assert!(Instant::now() < deadline, "node did not recover");
        cmid += 1;
    }
}

/// Start-up: a bad URL and an unreachable Redis refuse to start, with a
/// message naming the problem.
#[test]
fn bad_url_and_unreachable_redis_refuse_to_start() {
    let port = free_port();
    for (url, want) in [
        ("not-a-url".to_string(), "not a Redis URL"),
        (format!("redis://127.0.0.1:{port}/"), "unreachable"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_logic"))
            .args(["--listen", "127.0.0.1:0", "--redis", &url])
            .args(["--redis-timeout-ms", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run logic");
        let deadline = Instant::now() + common::ANSWER_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{url}: logic did not refuse to start");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!status.success(), "{url}: exited 0");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert!(err.contains(want), "{url}: {err}");
    }
}

/// The same scenarios on a Redis Cluster of 3 masters (every script's keys
/// share a hash tag, so each runs in one slot; PUBLISH from a script
/// reaches the subscriber through the cluster bus).
#[test]
fn the_same_scenarios_pass_on_a_redis_cluster_of_three_masters() {
    let c = redis_support::Cluster::start(3);
    let url = c.url();
    let mut con = c.con();
    concurrent_sends(&url);
    retry_through_other_node(&url, &mut con);
    sync_either_node(&url);
    newest_login_wins(&url);
    // The keys really are spread over the masters.
    let counts: Vec<u64> = c.nodes.iter().map(|n| n.dbsize()).collect();
    assert!(
        counts.iter().filter(|&&n| n > 0).count() >= 2,
        "keys on at most one master: {counts:?}"
    );
}

/// Scripts flushed from Redis (a failover to a replica without them, or
/// `SCRIPT FLUSH`): the NOSCRIPT answer makes the node reload them and the
/// request still succeeds.
#[test]
fn flushed_scripts_are_reloaded_on_noscript() {
    let r = Redis::start();
    let a = node(&r);
    let mut ga = a.gateway(1);
    let s = Sess::new(1, 1, 601, 1);
    ga.open(s);
    assert_eq!(send_acked(&mut ga, s, inbox(602), 1).msg_id, 1);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut r.con())
        .expect("flush");
    let ack = send_acked(&mut ga, s, inbox(602), 2);
    assert_eq!((ack.status, ack.msg_id), (Status::Ok as i32, 2), "{ack:?}");
}

/// The SEND_ACK of `cmid` from `s` (PUSHes on the way are skipped).
fn send_acked(g: &mut Gateway, s: Sess, ch: u64, cmid: u64) -> pb::SendAck {
    g.send(s, ch, cmid, b"x");
    loop {
        let got = g.collect(1).remove(0);
        if got.kind == Kind::SendAck && got.target == s.s {
            return got.send_ack();
        }
    }
}

/// Redis restarts (SIGKILL, then up again on its AOF with `appendfsync
/// always`): a login made through node B while Redis was coming back
/// still kicks the older session on node A (rule 3), and a session on A
/// that stayed connected receives every message stored meanwhile through
/// B, in order, without reconnecting or SYNC (live, or the catch-up after
/// A's subscription came back; repeats allowed, rule 8).
#[test]
fn across_a_redis_restart_logins_kick_and_sessions_catch_up() {
    let mut r = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (a, b) = (node(&r), node(&r));
    let (mut ga, mut gb) = (a.gateway(1), b.gateway(2));
    let room = 70;
    let reader = Sess::new(1, 1, 701, 1);
    let sender = Sess::new(1, 1, 702, 1);
    let old = Sess::new(2, 1, 703, 1);
    ga.open(reader);
    join_ok(&mut ga, reader, room, 1);
    ga.open(old);
    sync_ack(&mut ga, old, 2, &[]);
    gb.open(sender);
    join_ok(&mut gb, sender, room, 1);
    assert_eq!(send_acked(&mut gb, sender, room, 1).msg_id, 1);
    r.restart();
    let new = Sess::new(5, 5, 703, 1);
    gb.open(new);
    for cmid in 2..=5 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ack = send_acked(&mut gb, sender, room, cmid);
            if ack.status == Status::Ok as i32 || ack.status == Status::Duplicate as i32 {
                assert_eq!(ack.msg_id, cmid, "{ack:?}");
                break;
            }
            assert_eq!(ack.status, Status::Unavailable as i32, "{ack:?}");
            assert!(Instant::now() < deadline, "no recovery");
        }
    }
    let mut kicked = false;
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(kicked && seen.last() == Some(&5)) {
        assert!(Instant::now() < deadline, "kicked={kicked} pushes={seen:?}");
        match ga.recv() {
            LinkMsg::Kick { session, .. } => {
                assert_eq!(session, old.s);
                kicked = true;
            }
            LinkMsg::Deliver { targets, frame } => {
                let mut got = Vec::new();
                common::unpack(&mut got, &targets, &frame);
                for g in got.into_iter().filter(|g| g.kind == Kind::Push) {
                    assert_eq!(g.target, reader.s);
                    let id = g.push().msg_id;
                    // Repeats are allowed; a new id is always the next one.
                    if !seen.contains(&id) {
                        assert_eq!(id, seen.len() as u64 + 1, "order: {seen:?} then {id}");
                        seen.push(id);
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The harness's port picking: a port taken between "free" and
/// redis-server's bind makes redis-server exit, which the harness sees
/// (and `Redis::start` then tries another port) instead of waiting out
/// its timeout.
#[test]
fn the_harness_notices_a_port_taken_under_redis_server() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let started = Instant::now();
    assert!(Redis::try_start_on(port, &[]).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "seen at its exit"
    );
    drop(taken);
    assert!(Redis::try_start_on(port, &[]).is_some());
}
