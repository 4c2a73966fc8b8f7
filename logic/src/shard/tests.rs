//! Whole-flow tests of the shard logic without threads or sockets: a
//! deterministic harness wires several [`Shard`]s together in one thread,
//! delivers their messages in FIFO order per pair, and decodes what they
//! would send to each gateway. Time is a plain number.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb::{self, Status};

use super::*;
use crate::channel::inbox_of;

const RET: Retention = Retention {
    max_count: 100,
    max_age_ms: 60_000,
};

/// A client frame as the gateway saw it, decoded.
#[derive(Debug, Clone)]
struct Seen {
    target: SessionRef,
    kind: Kind,
    seq: u32,
    body: Bytes,
}

pub(super) struct Harness {
    shards: Vec<Shard>,
    queues: Vec<VecDeque<ShardMsg>>,
    /// Decoded link output per gateway id.
    gw_out: Vec<(u64, Vec<LinkMsg>)>,
    now: u64,
}

impl Harness {
    pub(super) fn new(n: usize) -> Harness {
        let cfg = ShardConfig {
            shards: n,
            retention: RET,
            max_send_body: 100,
            max_client_body: 65_536,
        };
        Harness {
            shards: (0..n).map(|i| Shard::new(i, cfg)).collect(),
            queues: (0..n).map(|_| VecDeque::new()).collect(),
            gw_out: Vec::new(),
            now: 1_000,
        }
    }

    fn n(&self) -> usize {
        self.shards.len()
    }

    /// Feeds a link message from gateway `gw` and runs to quiescence.
    pub(super) fn link(&mut self, gw: u64, msg: LinkMsg) {
        let uin = match &msg {
            LinkMsg::Open { uin, .. }
            | LinkMsg::Reopen { uin, .. }
            | LinkMsg::Close { uin, .. }
            | LinkMsg::Client { uin, .. } => *uin,
            other => panic!("not routed by uin: {other:?}"),
        };
        let to = shard_of_uin(uin, self.n());
        self.queues[to].push_back(ShardMsg::Link { gw, msg });
        self.run();
    }

    pub(super) fn gateway_down(&mut self, gw: u64) {
        for q in &mut self.queues {
            q.push_back(ShardMsg::GatewayDown { gw });
        }
        self.run();
    }

    fn run(&mut self) {
        loop {
            let Some(i) = (0..self.n()).find(|&i| !self.queues[i].is_empty()) else {
                return;
            };
            let mut out = Outbox::new(i, self.n());
            while let Some(m) = self.queues[i].pop_front() {
                self.shards[i].handle(self.now, m, &mut out);
            }
            for (gw, mut bytes) in out.io.drain(..) {
                let mut msgs = Vec::new();
                while let Some(m) = link::decode(&mut bytes, 1 << 20).expect("valid link output") {
                    msgs.push(m);
                }
                assert!(bytes.is_empty());
                match self.gw_out.iter_mut().find(|(g, _)| *g == gw) {
                    Some((_, v)) => v.extend(msgs),
                    None => self.gw_out.push((gw, msgs)),
                }
            }
            for (t, msgs) in out.to_shard.iter_mut().enumerate() {
                self.queues[t].extend(msgs.drain(..));
            }
        }
    }

    /// Takes everything sent to gateway `gw` so far.
    pub(super) fn take(&mut self, gw: u64) -> Vec<LinkMsg> {
        self.gw_out
            .iter_mut()
            .find(|(g, _)| *g == gw)
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_default()
    }

    /// Takes the client frames delivered via gateway `gw`, one per target.
    fn seen(&mut self, gw: u64) -> Vec<Seen> {
        let mut out = Vec::new();
        for m in self.take(gw) {
            let LinkMsg::Deliver { targets, frame } = m else {
                panic!("expected only Deliver, got {m:?}");
            };
            let f = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
                .expect("valid client frame")
                .expect("whole client frame");
            for t in targets {
                out.push(Seen {
                    target: t,
                    kind: f.kind,
                    seq: f.seq,
                    body: f.body.clone(),
                });
            }
        }
        out
    }
}

#[derive(Clone, Copy)]
struct User {
    gw: u64,
    s: SessionRef,
    uin: u64,
    dev: u32,
}

impl User {
    fn new(gw: u64, conn: u64, uin: u64) -> User {
        User {
            gw,
            s: SessionRef { conn, epoch: conn },
            uin,
            dev: 1,
        }
    }
    fn open(&self, h: &mut Harness) {
        h.link(
            self.gw,
            LinkMsg::Open {
                session: self.s,
                uin: self.uin,
                device: self.dev,
                login_ms: self.s.epoch,
            },
        );
    }
    fn req<M: Message>(&self, h: &mut Harness, kind: Kind, seq: u32, msg: &M) {
        let mut f = BytesMut::new();
        codec::encode(&mut f, kind, seq, msg);
        h.link(
            self.gw,
            LinkMsg::Client {
                session: self.s,
                uin: self.uin,
                device: self.dev,
                frame: f.freeze(),
            },
        );
    }
    fn join(&self, h: &mut Harness, ch: u64) {
        self.req(h, Kind::Join, 1, &pb::Join { channel: ch });
    }
    fn send(&self, h: &mut Harness, ch: u64, cmid: u64, body: &'static [u8]) {
        let m = pb::SendReq {
            channel: ch,
            client_msg_id: cmid,
            body: Bytes::from_static(body),
        };
        self.req(h, Kind::Send, cmid as u32, &m);
    }
}

fn pushes_to(seen: &[Seen], s: SessionRef) -> Vec<(u64, u64)> {
    seen.iter()
        .filter(|x| x.target == s && x.kind == Kind::Push)
        .map(|x| {
            let p = pb::Push::decode(x.body.clone()).expect("push");
            (p.channel, p.msg_id)
        })
        .collect()
}

fn acks_to(seen: &[Seen], s: SessionRef) -> Vec<pb::SendAck> {
    seen.iter()
        .filter(|x| x.target == s && x.kind == Kind::SendAck)
        .map(|x| pb::SendAck::decode(x.body.clone()).expect("ack"))
        .collect()
}

#[test]
fn room_fan_out_across_gateways_and_shards() {
    for n in [1, 2, 3] {
        let mut h = Harness::new(n);
        let users: Vec<User> = (1..=6).map(|i| User::new(1 + i % 2, i, 100 + i)).collect();
        for u in &users {
            u.open(&mut h);
            u.join(&mut h, 7);
        }
        let outsider = User::new(1, 50, 999);
        outsider.open(&mut h);
        h.take(1);
        h.take(2);
        for cmid in 1..=5 {
            users[cmid as usize % 6].send(&mut h, 7, cmid, b"hi");
        }
        let mut seen = h.seen(1);
        seen.extend(h.seen(2));
        for u in &users {
            let want: Vec<(u64, u64)> = (1..=5).map(|id| (7, id)).collect();
            assert_eq!(pushes_to(&seen, u.s), want, "n={n} uin={}", u.uin);
        }
        assert!(pushes_to(&seen, outsider.s).is_empty());
        let ids: Vec<u64> = (1..=5)
            .flat_map(|c| acks_to(&seen, users[c % 6].s))
            .filter(|a| a.status == Status::Ok as i32)
            .map(|a| a.msg_id)
            .collect();
        assert_eq!(ids.len(), 5);
        let total: u64 = h.shards.iter().map(|s| s.counters().stored).sum();
        assert_eq!(total, 5);
    }
}

#[test]
fn dedup_retry_answers_duplicate_and_stores_nothing() {
    let mut h = Harness::new(2);
    let a = User::new(1, 1, 10);
    a.open(&mut h);
    a.join(&mut h, 5);
    a.send(&mut h, 5, 42, b"x");
    a.send(&mut h, 5, 42, b"x");
    a.send(&mut h, 5, 41, b"x");
    let seen = h.seen(1);
    let acks = acks_to(&seen, a.s);
    let got: Vec<(i32, u64)> = acks.iter().map(|a| (a.status, a.msg_id)).collect();
    assert_eq!(
        got,
        vec![
            (Status::Ok as i32, 1),
            (Status::Duplicate as i32, 1),
            (Status::Duplicate as i32, 0)
        ]
    );
    assert_eq!(pushes_to(&seen, a.s), vec![(5, 1)]);
}

#[test]
fn validation_answers() {
    let mut h = Harness::new(2);
    let a = User::new(1, 1, 10);
    a.open(&mut h);
    a.send(&mut h, 0, 1, b"x");
    a.send(&mut h, 5, 2, b"x");
    a.send(&mut h, inbox_of(11), 3, &[0u8; 101]);
    // A refused id may be retried: this one is stored.
    a.send(&mut h, inbox_of(11), 3, b"dm");
    let got: Vec<i32> = acks_to(&h.seen(1), a.s).iter().map(|a| a.status).collect();
    let want = [
        Status::Invalid,
        Status::NotMember,
        Status::TooLarge,
        Status::Ok,
    ];
    assert_eq!(got, want.map(|s| s as i32));
}

#[test]
fn inbox_dm_goes_to_owner_only_and_sync_reports_it() {
    let mut h = Harness::new(2);
    let a = User::new(1, 1, 10);
    let b = User::new(2, 2, 11);
    let b2 = User {
        dev: 2,
        s: SessionRef { conn: 3, epoch: 3 },
        ..b
    };
    for u in [a, b, b2] {
        u.open(&mut h);
    }
    a.send(&mut h, inbox_of(11), 1, b"dm");
    let seen_b = h.seen(2);
    assert_eq!(pushes_to(&seen_b, b.s), vec![(inbox_of(11), 1)]);
    assert_eq!(pushes_to(&seen_b, b2.s), vec![(inbox_of(11), 1)]);
    assert!(pushes_to(&h.seen(1), a.s).is_empty());
    b.req(&mut h, Kind::Sync, 9, &pb::SyncReq { heads: vec![] });
    let seen = h.seen(2);
    let ack = seen
        .iter()
        .find(|x| x.kind == Kind::SyncAck)
        .expect("sync ack");
    assert_eq!(ack.seq, 9);
    let heads = pb::SyncAck::decode(ack.body.clone()).expect("ack").heads;
    assert_eq!(
        heads,
        vec![pb::ChannelHead {
            channel: inbox_of(11),
            msg_id: 1
        }]
    );
}

#[test]
fn sync_pushes_missed_messages_in_order_then_acks() {
    let mut h = Harness::new(3);
    let a = User::new(1, 1, 10);
    let b = User::new(2, 2, 20);
    a.open(&mut h);
    b.open(&mut h);
    for room in [5, 6, 7] {
        a.join(&mut h, room);
        b.join(&mut h, room);
    }
    for cmid in 1..=4 {
        a.send(&mut h, 5, cmid, b"m");
    }
    a.send(&mut h, 6, 5, b"m");
    h.take(1);
    h.take(2);
    let heads = vec![
        pb::ChannelHead {
            channel: 5,
            msg_id: 2,
        },
        pb::ChannelHead {
            channel: 6,
            msg_id: 0,
        },
    ];
    b.req(&mut h, Kind::Sync, 77, &pb::SyncReq { heads });
    let seen = h.seen(2);
    let last = seen.last().expect("output");
    assert_eq!(
        (last.kind, last.seq),
        (Kind::SyncAck, 77),
        "SYNC_ACK comes last"
    );
    let mut pushes = pushes_to(&seen, b.s);
    pushes.sort_by_key(|&(ch, _)| ch);
    assert_eq!(pushes, vec![(5, 3), (5, 4), (6, 1)]);
    let ack = pb::SyncAck::decode(last.body.clone()).expect("ack");
    let want = [(5, 4), (6, 1), (7, 0), (inbox_of(20), 0)]
        .map(|(channel, msg_id)| pb::ChannelHead { channel, msg_id });
    assert_eq!(ack.heads, want.to_vec());
}

#[test]
fn duplicate_login_kicks_and_stale_close_is_fenced() {
    let mut h = Harness::new(2);
    let old = User::new(1, 1, 10);
    let new = User::new(2, 9, 10);
    old.open(&mut h);
    old.join(&mut h, 5);
    h.take(1);
    new.open(&mut h);
    let kicks = h.take(1);
    let want = LinkMsg::Kick {
        session: old.s,
        reason: pb::KickReason::DuplicateLogin as i32,
    };
    assert_eq!(kicks, vec![want]);
    h.link(
        1,
        LinkMsg::Close {
            session: old.s,
            uin: 10,
            device: 1,
        },
    );
    let other = User::new(1, 3, 11);
    other.open(&mut h);
    other.join(&mut h, 5);
    other.send(&mut h, 5, 1, b"x");
    assert_eq!(
        pushes_to(&h.seen(2), new.s),
        vec![(5, 1)],
        "the new session still routed"
    );
    let seen1 = h.seen(1);
    assert!(pushes_to(&seen1, old.s).is_empty());
}

#[test]
fn stale_epoch_on_same_gateway_is_kicked() {
    let mut h = Harness::new(2);
    let newer = User {
        s: SessionRef { conn: 1, epoch: 5 },
        ..User::new(1, 1, 10)
    };
    let older = User {
        s: SessionRef { conn: 2, epoch: 4 },
        ..newer
    };
    newer.open(&mut h);
    older.open(&mut h);
    let want = LinkMsg::Kick {
        session: older.s,
        reason: pb::KickReason::DuplicateLogin as i32,
    };
    assert_eq!(h.take(1), vec![want]);
}

#[test]
fn gateway_down_stops_pushes_to_it() {
    let mut h = Harness::new(2);
    let a = User::new(1, 1, 10);
    let b = User::new(2, 2, 11);
    for u in [a, b] {
        u.open(&mut h);
        u.join(&mut h, 5);
    }
    h.take(2);
    h.gateway_down(2);
    h.take(1);
    a.send(&mut h, 5, 1, b"x");
    assert!(
        h.take(2).is_empty(),
        "nothing for a gateway without sessions"
    );
    assert_eq!(pushes_to(&h.seen(1), a.s), vec![(5, 1)]);
    let sessions: usize = h.shards.iter().map(Shard::sessions).sum();
    assert_eq!(sessions, 1);
}

#[test]
fn leave_stops_pushes_and_join_reports_newest() {
    let mut h = Harness::new(2);
    let a = User::new(1, 1, 10);
    let b = User::new(1, 2, 11);
    for u in [a, b] {
        u.open(&mut h);
        u.join(&mut h, 5);
    }
    a.send(&mut h, 5, 1, b"x");
    b.req(&mut h, Kind::Leave, 3, &pb::Leave { channel: 5 });
    b.req(&mut h, Kind::Leave, 4, &pb::Leave { channel: 5 });
    h.take(1);
    a.send(&mut h, 5, 2, b"x");
    assert!(pushes_to(&h.seen(1), b.s).is_empty());
    b.join(&mut h, 5);
    let seen = h.seen(1);
    let ack = seen
        .iter()
        .find(|x| x.kind == Kind::JoinAck)
        .expect("join ack");
    let ack = pb::JoinAck::decode(ack.body.clone()).expect("decodes");
    assert_eq!((ack.status, ack.newest_msg_id), (Status::Ok as i32, 2));
}

#[test]
fn undecodable_body_terminates_with_bad_frame() {
    let mut h = Harness::new(1);
    let a = User::new(1, 1, 10);
    a.open(&mut h);
    let mut f = BytesMut::new();
    codec::encode_raw(&mut f, Kind::Send, 6, &[0xff, 0xff]);
    h.link(
        1,
        LinkMsg::Client {
            session: a.s,
            uin: 10,
            device: 1,
            frame: f.freeze(),
        },
    );
    let out = h.take(1);
    let [LinkMsg::Terminate { session, frame }] = &out[..] else {
        panic!("expected one Terminate, got {out:?}");
    };
    assert_eq!(*session, a.s);
    let f = codec::decode(&mut BytesMut::from(&frame[..]), 1024)
        .expect("valid")
        .expect("whole");
    assert_eq!((f.kind, f.seq), (Kind::Error, 6));
    let e = pb::Error::decode(f.body).expect("error body");
    assert_eq!(e.code, pb::error::ErrorCode::BadFrame as i32);
}

#[test]
fn pushes_follow_members_going_offline_and_back() {
    for n in [1, 3] {
        let mut h = Harness::new(n);
        let users: Vec<User> = (1..=4).map(|i| User::new(1, i, 10 + i)).collect();
        for u in &users {
            u.open(&mut h);
            u.join(&mut h, 5);
        }
        let away = users[1];
        h.link(
            1,
            LinkMsg::Close {
                session: away.s,
                uin: away.uin,
                device: away.dev,
            },
        );
        h.take(1);
        users[0].send(&mut h, 5, 1, b"while away");
        let seen = h.seen(1);
        for u in &users {
            let want = if u.uin == away.uin {
                vec![]
            } else {
                vec![(5, 1)]
            };
            assert_eq!(pushes_to(&seen, u.s), want, "n={n} uin={}", u.uin);
        }
        let back = User {
            s: SessionRef {
                conn: 40,
                epoch: 40,
            },
            ..away
        };
        back.open(&mut h);
        users[0].send(&mut h, 5, 2, b"welcome back");
        let seen = h.seen(1);
        assert_eq!(pushes_to(&seen, back.s), vec![(5, 2)], "n={n}");
        assert!(pushes_to(&seen, away.s).is_empty());
    }
}
