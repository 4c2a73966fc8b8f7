//! The room cap, what a JOIN costs, and eviction: a user's 1,000th JOIN
//! does the same online-set work as their first; evicted users, dedup
//! state and channels reload from the store with nothing forgotten.

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{LinkMsg, SessionRef};
use proto::pb::{self, Status};

use super::tests::Harness;
use crate::channel::inbox_of;
use crate::store::Store;

fn open(h: &mut Harness, gw: u64, conn: u64, uin: u64) -> SessionRef {
    let session = SessionRef { conn, epoch: conn };
    h.link(
        gw,
        LinkMsg::Open {
            session,
            uin,
            device: 1,
            login_ms: conn,
        },
    );
    session
}

fn close(h: &mut Harness, gw: u64, session: SessionRef, uin: u64) {
    h.link(
        gw,
        LinkMsg::Close {
            session,
            uin,
            device: 1,
        },
    );
}

fn req<M: Message>(h: &mut Harness, gw: u64, s: SessionRef, uin: u64, kind: Kind, seq: u32, m: &M) {
    let mut f = BytesMut::new();
    codec::encode(&mut f, kind, seq, m);
    h.link(
        gw,
        LinkMsg::Client {
            session: s,
            uin,
            device: 1,
            frame: f.freeze(),
        },
    );
}

/// The client frames of `kind` delivered via `gw`, decoded.
fn answers<M: Message + Default>(h: &mut Harness, gw: u64, kind: Kind) -> Vec<M> {
    let mut out = Vec::new();
    for m in h.take(gw) {
        if let LinkMsg::Deliver { frame, .. } = m {
            let f = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
                .expect("valid")
                .expect("whole");
            if f.kind == kind {
                out.push(M::decode(f.body).expect("decodes"));
            }
        }
    }
    out
}

fn total_online_updates(h: &Harness) -> u64 {
    h.shards.iter().map(|s| s.counters().online_updates).sum()
}

#[test]
fn the_thousandth_join_costs_what_the_first_does_and_the_next_is_too_large() {
    let mut h = Harness::new(3);
    let s = open(&mut h, 1, 1, 42);
    let mut costs = Vec::new();
    for room in 1..=1_000u64 {
        let before = total_online_updates(&h);
        req(
            &mut h,
            1,
            s,
            42,
            Kind::Join,
            room as u32,
            &pb::Join { channel: room },
        );
        costs.push(total_online_updates(&h) - before);
    }
    assert!(
        costs.iter().all(|&c| c == 1),
        "each JOIN marks one room: first {} last {}",
        costs[0],
        costs[999]
    );
    let acks: Vec<pb::JoinAck> = answers(&mut h, 1, Kind::JoinAck);
    assert_eq!(acks.len(), 1_000);
    assert!(acks.iter().all(|a| a.status == Status::Ok as i32));
    req(
        &mut h,
        1,
        s,
        42,
        Kind::Join,
        9,
        &pb::Join { channel: 5_000 },
    );
    let acks: Vec<pb::JoinAck> = answers(&mut h, 1, Kind::JoinAck);
    assert_eq!(acks[0].status, Status::TooLarge as i32);
    assert_eq!(
        h.store.rooms(42).expect("rooms").len(),
        1_000,
        "nothing stored"
    );
}

#[test]
fn an_evicted_user_comes_back_with_rooms_and_dedup() {
    let mut h = Harness::new(3);
    let s = open(&mut h, 1, 1, 7);
    req(&mut h, 1, s, 7, Kind::Join, 1, &pb::Join { channel: 30 });
    let send = |cmid| pb::SendReq {
        channel: 30,
        client_msg_id: cmid,
        body: Bytes::from_static(b"x"),
    };
    req(&mut h, 1, s, 7, Kind::Send, 2, &send(10));
    close(&mut h, 1, s, 7);
    h.take(1);
    h.now += 60_000;
    h.sweep();
    let loaded: usize = h.shards.iter().map(|x| x.loaded().users).sum();
    assert_eq!(loaded, 0, "nobody online, nothing in memory");
    let channels: usize = h.shards.iter().map(|x| x.loaded().channels).sum();
    assert_eq!(channels, 0, "idle channels evicted");
    let devices: usize = h.shards.iter().map(|x| x.loaded().devices).sum();
    assert_eq!(devices, 0);

    let s = open(&mut h, 2, 2, 7);
    req(&mut h, 2, s, 7, Kind::Send, 3, &send(10));
    req(&mut h, 2, s, 7, Kind::Send, 4, &send(11));
    let acks: Vec<pb::SendAck> = answers(&mut h, 2, Kind::SendAck);
    let got: Vec<(i32, u64)> = acks.iter().map(|a| (a.status, a.msg_id)).collect();
    assert_eq!(
        got,
        vec![(Status::Duplicate as i32, 1), (Status::Ok as i32, 2)],
        "still a member, dedup kept, the counter goes on"
    );
    assert_eq!(h.store.dedup(7, 1).expect("dedup"), Some((11, 2)));
}

#[test]
fn sync_of_an_evicted_channel_reads_the_store() {
    let mut h = Harness::new(2);
    let a = open(&mut h, 1, 1, 10);
    let b = open(&mut h, 1, 2, 11);
    for cmid in 1..=5u64 {
        let m = pb::SendReq {
            channel: inbox_of(11),
            client_msg_id: cmid,
            body: Bytes::from(format!("m{cmid}")),
        };
        req(&mut h, 1, a, 10, Kind::Send, cmid as u32, &m);
    }
    h.take(1);
    // Past the idle limit (30 s), within the age limit (60 s).
    h.now += 31_000;
    h.sweep();
    let channels: usize = h.shards.iter().map(|x| x.loaded().channels).sum();
    assert_eq!(channels, 0);
    let heads = vec![pb::ChannelHead {
        channel: inbox_of(11),
        msg_id: 2,
    }];
    req(&mut h, 1, b, 11, Kind::Sync, 9, &pb::SyncReq { heads });
    let pushes: Vec<pb::Push> = {
        let mut v = Vec::new();
        for m in h.take(1) {
            if let LinkMsg::Deliver { frame, .. } = m {
                let f = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
                    .expect("valid")
                    .expect("whole");
                if f.kind == Kind::Push {
                    v.push(pb::Push::decode(f.body).expect("push"));
                }
            }
        }
        v
    };
    let got: Vec<(u64, Bytes)> = pushes.into_iter().map(|p| (p.msg_id, p.body)).collect();
    assert_eq!(
        got,
        vec![
            (3, Bytes::from_static(b"m3")),
            (4, Bytes::from_static(b"m4")),
            (5, Bytes::from_static(b"m5"))
        ]
    );
}
