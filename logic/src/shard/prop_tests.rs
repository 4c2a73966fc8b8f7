//! Property tests of the shard logic over random sequences of session
//! notices and client requests.
//!
//! - Differential: one shard run to quiescence after every input, against
//!   three shards where proptest chooses which shard runs its next turn,
//!   when a turn's held (not yet durable) outputs are released, and
//!   injects the next input before anything is quiescent, so cross-shard
//!   interleavings are explored. Everything an interleaving cannot change
//!   must be equal (every answer's status, the channel lists of SYNC_ACKs,
//!   kicks, ERRORs); the rest must hold its invariants in both (ids per
//!   channel contiguous from 1, a DUPLICATE names the id its original got,
//!   a PUSH shows exactly the body its id was acknowledged with).
//! - Crashes: the same, with crashes at random points (every shard's
//!   memory and unreleased output lost, the store kept, the gateways
//!   re-announce): nothing acknowledged is lost, no id ever shows two
//!   bodies, and the store holds contiguous ids.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{LinkMsg, SessionRef};
use proto::pb::{self, Status};

use super::tests::Harness;
use crate::channel::inbox_of;
use crate::store::Store;

const USERS: u64 = 4;
const GATEWAYS: u64 = 2;

#[derive(Debug, Clone)]
enum Op {
    Open {
        user: u64,
        device: u32,
        gw: u64,
    },
    Reopen {
        user: u64,
        device: u32,
        gw: u64,
    },
    Close {
        user: u64,
        device: u32,
    },
    Join {
        user: u64,
        device: u32,
        ch: u64,
    },
    Leave {
        user: u64,
        device: u32,
        ch: u64,
    },
    Send {
        user: u64,
        device: u32,
        ch: u64,
        cmid: u64,
    },
    Sync {
        user: u64,
        device: u32,
        heads: Vec<(u64, u64)>,
    },
    GatewayDown {
        gw: u64,
    },
    /// Time passes past the idle limit and every shard sweeps (evicts).
    Sweep,
}

/// What the scheduled harness does between inputs.
#[derive(Debug, Clone, Copy)]
enum Sched {
    /// Shard `shard` runs a turn over up to `batches` queued batches.
    Turn { shard: usize, batches: usize },
    /// Shard `shard`'s oldest held turn becomes durable and is delivered.
    Release { shard: usize },
    /// Every shard and every unreleased output is lost (crash test only).
    Crash,
}

/// Rooms 1..=3, channel 0, and the inboxes of the users.
fn channel() -> impl Strategy<Value = u64> {
    prop_oneof![1..=3u64, Just(0u64), (1..=USERS).prop_map(inbox_of)]
}

fn op() -> impl Strategy<Value = Op> {
    let who = (1..=USERS, 1..=2u32);
    prop_oneof![
        1 => (who.clone(), 1..=GATEWAYS).prop_map(|((user, device), gw)| Op::Open { user, device, gw }),
        1 => (who.clone(), 1..=GATEWAYS).prop_map(|((user, device), gw)| Op::Reopen {
            user,
            device,
            gw
        }),
        1 => who.clone()
            .prop_map(|(user, device)| Op::Close { user, device }),
        1 => (who.clone(), channel()).prop_map(|((user, device), ch)| Op::Join { user, device, ch }),
        1 => (who.clone(), channel()).prop_map(|((user, device), ch)| Op::Leave { user, device, ch }),
        3 => (who.clone(), channel(), 1..6u64).prop_map(|((user, device), ch, cmid)| Op::Send {
            user,
            device,
            ch,
            cmid
        }),
        1 => (who, proptest::collection::vec((channel(), 0..4u64), 0..4)).prop_map(
            |((user, device), heads)| Op::Sync {
                user,
                device,
                heads
            }
        ),
        1 => (1..=GATEWAYS).prop_map(|gw| Op::GatewayDown { gw }),
        1 => Just(Op::Sweep),
    ]
}

fn sched(shards: usize, crashes: bool) -> impl Strategy<Value = Sched> {
    let crash_weight = if crashes { 1 } else { 0 };
    prop_oneof![
        4 => (0..shards, 1..4usize).prop_map(|(shard, batches)| Sched::Turn { shard, batches }),
        3 => (0..shards).prop_map(|shard| Sched::Release { shard }),
        2 * crash_weight => Just(Sched::Crash),
    ]
}

/// Inputs, each followed by what the scheduled harness does before the
/// next one.
fn steps(crashes: bool) -> impl Strategy<Value = Vec<(Op, Vec<Sched>)>> {
    proptest::collection::vec(
        (op(), proptest::collection::vec(sched(3, crashes), 0..5)),
        1..60,
    )
}

/// A gateway's view: the sessions of each device, latest last.
#[derive(Default)]
struct Gateways {
    sessions: Vec<((u64, u32), u64, SessionRef)>,
    next_epoch: u64,
    next_seq: u32,
    /// The largest `client_msg_id` each device sent so far.
    max_cmid: BTreeMap<(u64, u32), u64>,
    /// Seqs of SENDs below a larger id the device already sent: rule 7
    /// wants increasing ids, and for these the answer depends on whether
    /// the larger one was stored yet (timing), so they are compared by
    /// invariants only.
    unordered: std::collections::BTreeSet<u32>,
    /// Each device's last SEND, retried after a crash (its outcome is
    /// unknown to the client).
    last_send: BTreeMap<(u64, u32), Input>,
}

impl Gateways {
    fn session(&self, user: u64, device: u32) -> Option<(u64, SessionRef)> {
        self.sessions
            .iter()
            .rev()
            .find(|(k, _, _)| *k == (user, device))
            .map(|&(_, gw, s)| (gw, s))
    }

    /// Who a session belongs to.
    fn owner(&self, s: SessionRef) -> (u64, u32) {
        self.sessions
            .iter()
            .find(|(_, _, x)| *x == s)
            .map(|&(k, _, _)| k)
            .unwrap_or((0, 0))
    }

    /// The link messages `op` turns into (gateway, message), or a gateway
    /// down / sweep marker.
    fn translate(&mut self, op: &Op) -> Vec<Input> {
        let request = |me: &mut Self, user: u64, device: u32, kind: Kind, body: Vec<u8>| {
            let Some((gw, session)) = me.session(user, device) else {
                return Vec::new();
            };
            me.next_seq += 1;
            let mut f = BytesMut::new();
            codec::encode_raw(&mut f, kind, me.next_seq, &body);
            let msg = LinkMsg::Client {
                session,
                uin: user,
                device,
                frame: f.freeze(),
            };
            vec![Input::Link(gw, msg)]
        };
        match op.clone() {
            Op::Open { user, device, gw } | Op::Reopen { user, device, gw } => {
                self.next_epoch += 1;
                let fresh = SessionRef {
                    conn: self.next_epoch,
                    epoch: self.next_epoch,
                };
                let reopen = matches!(op, Op::Reopen { .. });
                // A Reopen re-announces the device's last session if any.
                let (gw, session) = match (reopen, self.session(user, device)) {
                    (true, Some(prev)) => prev,
                    _ => (gw, fresh),
                };
                self.sessions.push(((user, device), gw, session));
                let login_ms = session.epoch;
                let msg = if reopen {
                    LinkMsg::Reopen {
                        session,
                        uin: user,
                        device,
                        login_ms,
                    }
                } else {
                    LinkMsg::Open {
                        session,
                        uin: user,
                        device,
                        login_ms,
                    }
                };
                vec![Input::Link(gw, msg)]
            }
            Op::Close { user, device } => match self.session(user, device) {
                Some((gw, session)) => vec![Input::Link(
                    gw,
                    LinkMsg::Close {
                        session,
                        uin: user,
                        device,
                    },
                )],
                None => Vec::new(),
            },
            Op::Join { user, device, ch } => request(
                self,
                user,
                device,
                Kind::Join,
                pb::Join { channel: ch }.encode_to_vec(),
            ),
            Op::Leave { user, device, ch } => request(
                self,
                user,
                device,
                Kind::Leave,
                pb::Leave { channel: ch }.encode_to_vec(),
            ),
            Op::Send {
                user,
                device,
                ch,
                cmid,
            } => {
                let req = pb::SendReq {
                    channel: ch,
                    client_msg_id: cmid,
                    body: Bytes::from(format!("{user}/{device}/{cmid}")),
                };
                let max = self.max_cmid.entry((user, device)).or_default();
                let below = cmid < *max;
                *max = (*max).max(cmid);
                let out = request(self, user, device, Kind::Send, req.encode_to_vec());
                if below && !out.is_empty() {
                    self.unordered.insert(self.next_seq);
                }
                if let Some(i) = out.first() {
                    self.last_send.insert((user, device), i.clone());
                }
                out
            }
            Op::Sync {
                user,
                device,
                heads,
            } => {
                let heads = heads
                    .into_iter()
                    .map(|(channel, msg_id)| pb::ChannelHead { channel, msg_id })
                    .collect();
                request(
                    self,
                    user,
                    device,
                    Kind::Sync,
                    pb::SyncReq { heads }.encode_to_vec(),
                )
            }
            Op::GatewayDown { gw } => vec![Input::Down(gw)],
            Op::Sweep => vec![Input::Sweep],
        }
    }

    /// What gateways send after a logic restart: every live session, then
    /// each device's last SEND again (its client retries).
    fn reannounce(&self) -> Vec<Input> {
        let mut latest: BTreeMap<(u64, u32), (u64, SessionRef)> = BTreeMap::new();
        for &(k, gw, s) in &self.sessions {
            latest.insert(k, (gw, s));
        }
        let mut out: Vec<Input> = latest
            .into_iter()
            .map(|((uin, device), (gw, session))| {
                Input::Link(
                    gw,
                    LinkMsg::Reopen {
                        session,
                        uin,
                        device,
                        login_ms: session.epoch,
                    },
                )
            })
            .collect();
        out.extend(self.last_send.values().cloned());
        out
    }
}

#[derive(Debug, Clone)]
enum Input {
    Link(u64, LinkMsg),
    Down(u64),
    Sweep,
}

fn inject(h: &mut Harness, input: Input) {
    match input {
        Input::Link(gw, msg) => h.inject(gw, msg),
        Input::Down(gw) => h.inject_gateway_down(gw),
        Input::Sweep => {
            h.now += 40_000;
            h.sweep();
        }
    }
}

fn schedule(h: &mut Harness, s: Sched) {
    match s {
        Sched::Turn { shard, batches } => {
            let _ = h.turn(shard % h.n(), batches);
        }
        Sched::Release { shard } => {
            let _ = h.release(shard % h.n());
        }
        Sched::Crash => h.crash(),
    }
}

/// Everything a run showed its clients, sorted out.
#[derive(Default)]
struct Seen {
    /// Answers an interleaving cannot change, sorted.
    fixed: Vec<String>,
    /// (channel, msg_id) -> the "user/device/cmid" acked OK with it.
    ok: BTreeMap<(u64, u64), String>,
    /// "user/device/cmid" -> DUPLICATE msg_ids answered for it.
    dup: Vec<(String, u64)>,
    /// (channel, msg_id) -> every body a PUSH showed with it.
    pushed: BTreeMap<(u64, u64), Vec<Bytes>>,
    /// OK answers to SENDs in increasing-id order (timing-independent).
    ordered_ok: usize,
}

fn see(h: &mut Harness, gws: &Gateways, seen: &mut Seen) -> Result<(), TestCaseError> {
    for gw in 1..=GATEWAYS {
        for m in h.take(gw) {
            let (targets, frame) = match m {
                LinkMsg::Deliver { targets, frame } => (targets, frame),
                other => {
                    seen.fixed.push(format!("{gw} {other:?}"));
                    continue;
                }
            };
            let f = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
                .expect("valid")
                .expect("whole");
            for t in targets {
                let (user, device) = gws.owner(t);
                let who = format!("{gw} {t:?} seq {}", f.seq);
                match f.kind {
                    Kind::Push => {
                        let p = pb::Push::decode(f.body.clone()).expect("push");
                        seen.pushed
                            .entry((p.channel, p.msg_id))
                            .or_default()
                            .push(p.body);
                    }
                    Kind::SendAck => {
                        let a = pb::SendAck::decode(f.body.clone()).expect("ack");
                        let key = format!("{user}/{device}/{}", a.client_msg_id);
                        if !gws.unordered.contains(&f.seq) {
                            seen.fixed
                                .push(format!("{who} send {} {}", a.status, a.channel));
                            seen.ordered_ok += usize::from(a.status == Status::Ok as i32);
                        }
                        if a.status == Status::Ok as i32 {
                            let prev = seen.ok.insert((a.channel, a.msg_id), key.clone());
                            prop_assert!(
                                prev.is_none_or(|p| p == key),
                                "id {:?} acked for two SENDs",
                                (a.channel, a.msg_id)
                            );
                            let twice = seen
                                .ok
                                .iter()
                                .any(|(id, k)| *k == key && *id != (a.channel, a.msg_id));
                            prop_assert!(!twice, "{} stored twice (rule 7)", key);
                        } else if a.status == Status::Duplicate as i32 {
                            seen.dup.push((key, a.msg_id));
                        }
                    }
                    Kind::JoinAck => {
                        let a = pb::JoinAck::decode(f.body.clone()).expect("ack");
                        seen.fixed
                            .push(format!("{who} join {} {}", a.status, a.channel));
                    }
                    Kind::LeaveAck => {
                        let a = pb::LeaveAck::decode(f.body.clone()).expect("ack");
                        seen.fixed
                            .push(format!("{who} leave {} {}", a.status, a.channel));
                    }
                    Kind::SyncAck => {
                        let a = pb::SyncAck::decode(f.body.clone()).expect("ack");
                        let chans: Vec<u64> = a.heads.iter().map(|h| h.channel).collect();
                        seen.fixed.push(format!("{who} sync {chans:?}"));
                    }
                    other => seen.fixed.push(format!("{who} {other:?} {:?}", f.body)),
                }
            }
        }
    }
    Ok(())
}

/// The invariants every run must keep, whatever the interleaving.
fn check(seen: &Seen, store: &dyn Store) -> Result<(), TestCaseError> {
    let mut per_channel: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(ch, id) in seen.ok.keys() {
        per_channel.entry(ch).or_default().push(id);
    }
    for (ch, ids) in &per_channel {
        let newest = store.head(*ch).expect("head");
        prop_assert!(
            ids.iter().all(|&id| id >= 1 && id <= newest),
            "{ch}: {ids:?} vs head {newest}"
        );
        let stored = store.messages(*ch, 1, newest).expect("messages");
        let stored_ids: Vec<u64> = stored.iter().map(|m| m.msg_id).collect();
        prop_assert_eq!(
            stored_ids,
            (1..=newest).collect::<Vec<_>>(),
            "channel {} contiguous",
            ch
        );
        for m in stored {
            let f = codec::decode(&mut BytesMut::from(&m.frame[..]), 1 << 20)
                .expect("frame")
                .expect("whole");
            let p = pb::Push::decode(f.body).expect("push");
            let key = format!("{}/{}/", p.from_uin, p.from_device);
            prop_assert!(String::from_utf8_lossy(&p.body).starts_with(&key));
            if let Some(acked) = seen.ok.get(&(*ch, m.msg_id)) {
                prop_assert_eq!(
                    acked.as_bytes(),
                    &p.body[..],
                    "acked body is stored under its id"
                );
            }
        }
    }
    for ((ch, id), bodies) in &seen.pushed {
        let stored = store.messages(*ch, *id, *id).expect("read");
        prop_assert_eq!(stored.len(), 1, "pushed {:?} is stored", (ch, id));
        let f = codec::decode(&mut BytesMut::from(&stored[0].frame[..]), 1 << 20)
            .expect("frame")
            .expect("whole");
        let p = pb::Push::decode(f.body).expect("push");
        for b in bodies {
            prop_assert_eq!(b, &p.body, "a PUSH of {:?} showed another body", (ch, id));
        }
    }
    for (key, id) in &seen.dup {
        if *id != 0 {
            let original = seen.ok.iter().find(|(_, k)| *k == key).map(|(k, _)| k.1);
            if let Some(original) = original {
                prop_assert_eq!(*id, original, "DUPLICATE of {} names its original id", key);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn one_shard_in_order_and_three_shards_interleaved_agree(steps in steps(false)) {
        let (mut a, mut b) = (Harness::new(1), Harness::new(3));
        let mut gws = Gateways::default();
        let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
        for (op, scheds) in steps {
            for input in gws.translate(&op) {
                inject(&mut a, input.clone());
                a.run();
                inject(&mut b, input);
            }
            for s in scheds {
                schedule(&mut b, s);
            }
            see(&mut a, &gws, &mut seen_a)?;
            see(&mut b, &gws, &mut seen_b)?;
        }
        b.run();
        see(&mut b, &gws, &mut seen_b)?;
        seen_a.fixed.sort();
        seen_b.fixed.sort();
        prop_assert_eq!(&seen_a.fixed, &seen_b.fixed);
        prop_assert_eq!(seen_a.ordered_ok, seen_b.ordered_ok, "as many messages stored");
        check(&seen_a, a.store.as_ref())?;
        check(&seen_b, b.store.as_ref())?;
    }

    #[test]
    fn crashes_lose_nothing_acknowledged_and_never_reuse_an_id(steps in steps(true)) {
        let mut h = Harness::new(3);
        let mut gws = Gateways::default();
        let mut seen = Seen::default();
        for (op, scheds) in steps {
            for input in gws.translate(&op) {
                inject(&mut h, input);
            }
            for s in scheds {
                schedule(&mut h, s);
                if matches!(s, Sched::Crash) {
                    for input in gws.reannounce() {
                        inject(&mut h, input);
                    }
                }
            }
            see(&mut h, &gws, &mut seen)?;
        }
        h.run();
        see(&mut h, &gws, &mut seen)?;
        check(&seen, h.store.as_ref())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever bytes a gateway forwards as a client frame, the shard
    /// answers with a Deliver or a Terminate to that session, never panics.
    #[test]
    fn garbage_client_frames_are_answered_not_fatal(
        kind in prop_oneof![3..=6u8, any::<u8>()],
        body in proptest::collection::vec(any::<u8>(), 0..64),
        cut in 0..80usize,
    ) {
        let mut h = Harness::new(2);
        let session = SessionRef { conn: 1, epoch: 1 };
        h.link(
            1,
            LinkMsg::Open {
                session,
                uin: 9,
                device: 1,
                login_ms: 1,
            },
        );
        let mut f = BytesMut::new();
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&[1, kind, 0, 0, 0, 0, 0, 7]);
        f.extend_from_slice(&body);
        let frame = f.freeze().slice(..cut.min(12 + body.len()));
        h.link(1, LinkMsg::Client { session, uin: 9, device: 1, frame });
        for m in h.take(1) {
            match m {
                LinkMsg::Deliver { targets, .. } => prop_assert_eq!(targets, vec![session]),
                LinkMsg::Terminate { session: s, .. } => prop_assert_eq!(s, session),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
