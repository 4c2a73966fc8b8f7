//! Differential property test: random sequences of session notices and
//! client requests give the same answers, session by session, whether the
//! state lives in one shard or is spread over three. Sharding is an
//! implementation detail; this checks that it never shows.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proto::codec::{self, Kind};
use proto::link::{LinkMsg, SessionRef};
use proto::pb;

use super::tests::Harness;
use crate::channel::inbox_of;

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
}

/// Rooms 1..=3, channel 0, and the inboxes of the users.
fn channel() -> impl Strategy<Value = u64> {
    prop_oneof![1..=3u64, Just(0u64), (1..=USERS).prop_map(inbox_of)]
}

fn op() -> impl Strategy<Value = Op> {
    let who = (1..=USERS, 1..=2u32);
    prop_oneof![
        (who.clone(), 1..=GATEWAYS).prop_map(|((user, device), gw)| Op::Open { user, device, gw }),
        (who.clone(), 1..=GATEWAYS).prop_map(|((user, device), gw)| Op::Reopen {
            user,
            device,
            gw
        }),
        who.clone()
            .prop_map(|(user, device)| Op::Close { user, device }),
        (who.clone(), channel()).prop_map(|((user, device), ch)| Op::Join { user, device, ch }),
        (who.clone(), channel()).prop_map(|((user, device), ch)| Op::Leave { user, device, ch }),
        (who.clone(), channel(), 1..6u64).prop_map(|((user, device), ch, cmid)| Op::Send {
            user,
            device,
            ch,
            cmid
        }),
        (who, proptest::collection::vec((channel(), 0..4u64), 0..4)).prop_map(
            |((user, device), heads)| Op::Sync {
                user,
                device,
                heads
            }
        ),
        (1..=GATEWAYS).prop_map(|gw| Op::GatewayDown { gw }),
    ]
}

/// Drives two harnesses with the same ops; tracks each device's latest
/// session the way a gateway would.
struct Twin {
    a: Harness,
    b: Harness,
    sessions: Vec<((u64, u32), u64, SessionRef)>,
    next_epoch: u64,
}

impl Twin {
    fn both(&mut self, f: impl Fn(&mut Harness)) {
        f(&mut self.a);
        f(&mut self.b);
    }

    fn session(&self, user: u64, device: u32) -> Option<(u64, SessionRef)> {
        self.sessions
            .iter()
            .rev()
            .find(|(k, _, _)| *k == (user, device))
            .map(|&(_, gw, s)| (gw, s))
    }

    fn request<M: prost::Message>(&mut self, user: u64, device: u32, kind: Kind, msg: &M) {
        let Some((gw, session)) = self.session(user, device) else {
            return;
        };
        let mut f = BytesMut::new();
        codec::encode(&mut f, kind, 5, msg);
        let frame = f.freeze();
        self.both(|h| {
            let msg = LinkMsg::Client {
                session,
                uin: user,
                device,
                frame: frame.clone(),
            };
            h.link(gw, msg);
        });
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Open { user, device, gw } | Op::Reopen { user, device, gw } => {
                self.next_epoch += 1;
                let session = SessionRef {
                    conn: self.next_epoch,
                    epoch: self.next_epoch,
                };
                // A Reopen re-announces the device's last session if any.
                let (gw, session) = match (&op, self.session(user, device)) {
                    (Op::Reopen { .. }, Some(prev)) => prev,
                    _ => (gw, session),
                };
                self.sessions.push(((user, device), gw, session));
                let reopen = matches!(op, Op::Reopen { .. });
                self.both(|h| {
                    let msg = if reopen {
                        LinkMsg::Reopen {
                            session,
                            uin: user,
                            device,
                            login_ms: session.epoch,
                        }
                    } else {
                        LinkMsg::Open {
                            session,
                            uin: user,
                            device,
                            login_ms: session.epoch,
                        }
                    };
                    h.link(gw, msg);
                });
            }
            Op::Close { user, device } => {
                if let Some((gw, session)) = self.session(user, device) {
                    self.both(|h| {
                        h.link(
                            gw,
                            LinkMsg::Close {
                                session,
                                uin: user,
                                device,
                            },
                        )
                    });
                }
            }
            Op::Join { user, device, ch } => {
                self.request(user, device, Kind::Join, &pb::Join { channel: ch })
            }
            Op::Leave { user, device, ch } => {
                self.request(user, device, Kind::Leave, &pb::Leave { channel: ch })
            }
            Op::Send {
                user,
                device,
                ch,
                cmid,
            } => {
                let req = pb::SendReq {
                    channel: ch,
                    client_msg_id: cmid,
                    body: Bytes::from_static(b"b"),
                };
                self.request(user, device, Kind::Send, &req);
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
                self.request(user, device, Kind::Sync, &pb::SyncReq { heads });
            }
            Op::GatewayDown { gw } => self.both(|h| h.gateway_down(gw)),
        }
    }
}

/// One gateway's output, exploded per target and sorted, so that target
/// order inside a Deliver and interleaving across shards do not count.
fn normalized(msgs: Vec<LinkMsg>) -> Vec<String> {
    let mut out = Vec::new();
    for m in msgs {
        match m {
            LinkMsg::Deliver { targets, frame } => {
                for t in targets {
                    out.push(format!("deliver {t:?} {}", hex(&frame)));
                }
            }
            other => out.push(format!("{other:?}")),
        }
    }
    out.sort();
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_shard_and_three_shards_answer_the_same(ops in proptest::collection::vec(op(), 1..60)) {
        let mut t = Twin { a: Harness::new(1), b: Harness::new(3), sessions: Vec::new(), next_epoch: 0 };
        for (i, op) in ops.into_iter().enumerate() {
            let what = format!("{op:?}");
            t.apply(op);
            for gw in 1..=GATEWAYS {
                let (a, b) = (normalized(t.a.take(gw)), normalized(t.b.take(gw)));
                prop_assert_eq!(a, b, "op {} {} gateway {}", i, what, gw);
            }
        }
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
