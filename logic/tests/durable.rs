//! Issue 11: a logic server killed with SIGKILL and started again on the
//! same data directory forgets nothing it acknowledged. Real processes,
//! fake gateways on loopback, in both fsync modes.

mod common;
mod durable_support;

use std::collections::BTreeMap;

use bytes::BytesMut;
use common::{Gateway, Got, Sess, inbox, to};
use durable_support::Durable;
use proto::codec::Kind;
use proto::link;
use proto::pb::{self, Status};

const GW: u64 = 0xD0;

fn connect(addr: std::net::SocketAddr) -> Gateway {
    let mut g = Gateway::raw(addr);
    g.id = GW;
    let mut b = BytesMut::new();
    link::encode_hello(&mut b, GW, 1);
    g.write(&b);
    g
}

fn decode<M: prost::Message + Default>(g: &Got) -> M {
    M::decode(g.body.clone()).expect("body decodes")
}

/// Waits for the answer with `seq` of `kind` for `s`; everything else
/// read stays in `other`.
fn answer(g: &mut Gateway, s: Sess, kind: Kind, seq: u32, other: &mut Vec<Got>) -> Got {
    loop {
        if let Some(i) = other
            .iter()
            .position(|x| x.target == s.s && x.kind == kind && x.seq == seq)
        {
            return other.remove(i);
        }
        other.extend(g.collect(1));
    }
}

fn restart_forgets_nothing(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("dir");
    let mut logic = Durable::start(dir.path(), "127.0.0.1:0", extra);
    let mut g = connect(logic.addr);
    let alice = Sess::new(1, 1, 100, 1);
    let bob = Sess::new(2, 2, 200, 1);
    let rooms = [11u64, 12, 13];
    for s in [alice, bob] {
        g.open(s);
        for (i, &r) in rooms.iter().enumerate() {
            g.join(s, r, 10 + i as u32);
        }
    }
    let mut rest = Vec::new();
    for s in [alice, bob] {
        for i in 0..rooms.len() as u32 {
            let ack: pb::JoinAck = decode(&answer(&mut g, s, Kind::JoinAck, 10 + i, &mut rest));
            assert_eq!(ack.status, Status::Ok as i32);
        }
    }
    // 200 SENDs pipelined: alice to the rooms and to bob's inbox, bob to
    // alice's inbox. Remember what each acked id holds.
    let channels = [11u64, 12, 13, inbox(200)];
    let mut sent: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut cmids = Vec::new();
    for cmid in 1..=160u64 {
        let ch = channels[cmid as usize % channels.len()];
        g.send(alice, ch, cmid, format!("a{cmid}").as_bytes());
        cmids.push((alice, ch, cmid));
    }
    for cmid in 1..=40u64 {
        g.send(bob, inbox(100), cmid, format!("b{cmid}").as_bytes());
        cmids.push((bob, inbox(100), cmid));
    }
    for &(s, ch, cmid) in &cmids {
        let ack: pb::SendAck = decode(&answer(&mut g, s, Kind::SendAck, cmid as u32, &mut rest));
        assert_eq!((ack.status, ack.channel), (Status::Ok as i32, ch));
        let who = if s.uin == alice.uin { 'a' } else { 'b' };
        assert!(
            sent.insert((ch, ack.msg_id), format!("{who}{cmid}"))
                .is_none(),
            "one id per message"
        );
    }
    let newest: BTreeMap<u64, u64> = channels
        .iter()
        .chain([inbox(100)].iter())
        .map(|&ch| {
            (
                ch,
                sent.keys()
                    .filter(|k| k.0 == ch)
                    .map(|k| k.1)
                    .max()
                    .unwrap_or(0),
            )
        })
        .collect();

    logic.restart(extra);
    let mut g = connect(logic.addr);
    for s in [alice, bob] {
        g.reopen(s);
    }
    // SYNC from zero: every acknowledged message, in order, then heads.
    let mut rest = Vec::new();
    let heads: Vec<(u64, u64)> = [11u64, 12, 13, inbox(100)]
        .iter()
        .map(|&c| (c, 0))
        .collect();
    g.sync(alice, 500, &heads);
    let ack: pb::SyncAck = decode(&answer(&mut g, alice, Kind::SyncAck, 500, &mut rest));
    let got: BTreeMap<u64, u64> = ack.heads.iter().map(|h| (h.channel, h.msg_id)).collect();
    let want: BTreeMap<u64, u64> = [11u64, 12, 13, inbox(100)]
        .iter()
        .map(|&c| (c, newest[&c]))
        .collect();
    assert_eq!(got, want, "JOIN state and heads kept");
    let pushes = to(&rest, alice, Kind::Push);
    let mut synced: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for p in &pushes {
        let p = p.push();
        let prev = last.insert(p.channel, p.msg_id).unwrap_or(0);
        assert!(p.msg_id > prev, "in order per channel");
        synced.insert(
            (p.channel, p.msg_id),
            String::from_utf8(p.body.to_vec()).expect("utf-8"),
        );
    }
    let want: BTreeMap<(u64, u64), String> = sent
        .iter()
        .filter(|(k, _)| k.0 != inbox(200))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(synced, want, "SYNC returns every acked message");
    // Bob's inbox too.
    let mut rest = Vec::new();
    g.sync(bob, 501, &[(inbox(200), 0)]);
    let _ = answer(&mut g, bob, Kind::SyncAck, 501, &mut rest);
    assert_eq!(
        to(&rest, bob, Kind::Push).len(),
        newest[&inbox(200)] as usize
    );

    // The next SEND gets newest + 1; a retry of the last acked SEND is a
    // DUPLICATE with its id, one below it DUPLICATE 0.
    let mut rest = Vec::new();
    g.send(alice, 11, 161, b"after restart");
    let ack: pb::SendAck = decode(&answer(&mut g, alice, Kind::SendAck, 161, &mut rest));
    assert_eq!(
        (ack.status, ack.msg_id),
        (Status::Ok as i32, newest[&11] + 1)
    );
    g.send(bob, inbox(100), 40, b"b40");
    let ack: pb::SendAck = decode(&answer(&mut g, bob, Kind::SendAck, 40, &mut rest));
    let b40 = sent
        .iter()
        .find(|(_, v)| v.as_str() == "b40")
        .map(|(k, _)| k.1)
        .expect("b40 was acked");
    assert_eq!((ack.status, ack.msg_id), (Status::Duplicate as i32, b40));
    g.send(bob, inbox(100), 39, b"b39");
    let ack: pb::SendAck = decode(&answer(&mut g, bob, Kind::SendAck, 39, &mut rest));
    assert_eq!((ack.status, ack.msg_id), (Status::Duplicate as i32, 0));
    // Membership survived: bob gets alice's new room message live.
    assert!(
        rest.iter().any(|x| x.target == bob.s
            && x.kind == Kind::Push
            && x.push().msg_id == newest[&11] + 1),
        "bob, still a member of room 11, got the push"
    );
}

#[test]
fn kill_9_and_restart_forgets_nothing_acked_in_batch_mode() {
    restart_forgets_nothing(&["--fsync", "batch"]);
}

#[test]
fn kill_9_and_restart_forgets_nothing_acked_in_always_mode() {
    restart_forgets_nothing(&["--fsync", "always"]);
}

#[test]
fn a_second_server_on_the_same_directory_refuses_naming_the_lock() {
    let dir = tempfile::tempdir().expect("dir");
    let _first = Durable::start(dir.path(), "127.0.0.1:0", &[]);
    let err = Durable::refused(dir.path(), &[]);
    let lock = dir.path().join("logic.lock");
    assert!(
        err.contains(&lock.display().to_string()),
        "names the lock file: {err}"
    );
}

#[test]
fn the_data_directory_is_created_when_missing() {
    let dir = tempfile::tempdir().expect("dir");
    let nested = dir.path().join("a").join("b");
    let logic = Durable::start(&nested, "127.0.0.1:0", &[]);
    assert!(nested.join("logic.lock").exists());
    drop(logic);
}
