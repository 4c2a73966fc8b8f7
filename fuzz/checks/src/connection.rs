//! Target `connection`: the gateway's sans-io connection policy
//! (`gateway::connection`), driven through its harness
//! (`gateway::connection::sim::Sim`, which calls it exactly as the worker
//! does) by an arbitrary sequence of events on a virtual clock: clients
//! connect, send arbitrary bytes or well-formed frames (LOGIN with a valid
//! or a bad token, HEARTBEAT, SEND, JOIN, ...), close; time passes; sockets
//! take a chosen number of bytes; the logic tier delivers (to live, stale
//! and foreign sessions, within and over the max body), kicks, terminates
//! and bounces; the link goes up and down; the uplink queue fills and
//! drains; the worker drains.
//!
//! Invariants, after every event:
//! - no panic (the connection's own debug assertions included);
//! - what each socket got is well formed: whole frames of server kinds
//!   (decoded by `proto::decode`), then at most part of one; once its
//!   write side is shut, whole frames only;
//! - at most one session per slot, as the uplink sees it: an `Open` or
//!   `Reopen` only for the slot's live session and never twice, a `Close`
//!   only for an open one, a forwarded request only for an open session
//!   (none overtakes its `Open`), every item for this worker;
//! - idle expiry is never early and at most one tick late: a session
//!   freed by its timer while active had received nothing for its idle
//!   timeout, and the timer fired within one tick of it;
//! - the open-connections gauge is the number of slots in use.
//!
//! Input layout: a sequence of events, each an opcode byte and its
//! arguments; an input that ends mid-event reads zeros.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use gateway::conn_id::ConnId;
use gateway::connection::ConnConfig;
use gateway::connection::sim::Sim;
use gateway::heartbeat::HeartbeatPolicy;
use gateway::ratelimit::Limits;
use gateway::session::{CloseReason, Now, SessionConfig, State};
use gateway::uplink::Up;
use prost::Message;
use proto::link::SessionRef;
use proto::{Kind, TokenKey, pb};

const T0: u64 = 1_000_000;
const UNIX0: u64 = 1_800_000_000_000;
const SECRET: &[u8] = b"fuzz secret";
/// The wheel's tick (ms).
pub const TICK: u64 = 100;
/// Slots the events address (the worker holds at most this many).
const SLOTS: usize = 4;
/// The max body a client may be sent (small, so oversize is reachable).
const MAX_BODY: usize = 200;

/// The settings every run uses: short timeouts so that time matters.
pub fn config() -> ConnConfig {
    ConnConfig {
        worker: 0,
        workers: 2,
        session: SessionConfig {
            heartbeat: HeartbeatPolicy {
                wired_ms: 1_000,
                wifi_ms: 2_000,
                min_ms: 500,
                max_ms: 4_000,
                ..HeartbeatPolicy::default()
            },
            rate: Limits::default(),
            login_timeout_ms: 3_000,
            linger_ms: 1_000,
            key: TokenKey::new(SECRET),
            session_id_prefix: 0,
        },
        max_body: MAX_BODY,
        write_budget: 600,
        max_connections: SLOTS,
        drain_ms: 2_000,
    }
}

/// Reads an input's bytes; zeros once it runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
}

/// The event opcodes (the byte modulo their count).
pub mod op {
    pub const ACCEPT: u8 = 0;
    pub const RAW: u8 = 1;
    pub const FRAME: u8 = 2;
    pub const TIME: u8 = 3;
    pub const ROOM: u8 = 4;
    pub const EOF: u8 = 5;
    pub const DELIVER: u8 = 6;
    pub const KICK: u8 = 7;
    pub const TERMINATE: u8 = 8;
    pub const BOUNCE: u8 = 9;
    pub const LINK: u8 = 10;
    pub const DRAIN: u8 = 11;
    pub const UP_ROOM: u8 = 12;
    pub const UP_TAKE: u8 = 13;
    pub const COUNT: u8 = 14;
}

/// Runs the target on one input; panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let mut r = Reader(data);
    let now = Now {
        mono_ms: T0,
        unix_ms: UNIX0,
    };
    let mut sim = Sim::new(config(), now, TICK, 8);
    let mut model = Model::default();
    let mut steps = 0;
    while !r.done() && steps < 512 {
        steps += 1;
        event(&mut sim, &mut model, &mut r);
        invariants(&mut sim, &mut model);
    }
    // Let every timer run out.
    sim.advance(sim.now.mono_ms + 60_000);
    invariants(&mut sim, &mut model);
}

fn slot(r: &mut Reader) -> usize {
    usize::from(r.u8()) % SLOTS
}

fn event(sim: &mut Sim, model: &mut Model, r: &mut Reader) {
    match r.u8() % op::COUNT {
        op::ACCEPT => {
            let room = usize::from(r.u16());
            if let Some(key) = sim.accept(room) {
                model.shadow.insert(key, Shadow::default());
            }
        }
        op::RAW => {
            let key = slot(r);
            let n = usize::from(r.u8());
            let bytes = r.bytes(n);
            read(sim, model, key, &bytes);
        }
        op::FRAME => {
            let key = slot(r);
            let bytes = client_frame(r);
            read(sim, model, key, &bytes);
        }
        op::TIME => {
            let to = sim.now.mono_ms + u64::from(r.u16()) * 2;
            sim.advance(to);
        }
        op::ROOM => {
            let key = slot(r);
            sim.set_room(key, usize::from(r.u16()));
        }
        op::EOF => {
            let key = slot(r);
            let reason = if r.u8() & 1 == 0 {
                CloseReason::ClientEof
            } else {
                CloseReason::Io
            };
            sim.eof(key, reason);
        }
        op::DELIVER => {
            let mask = r.u8();
            let len = usize::from(r.u16()) % (MAX_BODY + 64);
            let seq = u32::from(r.u8());
            let kind =
                [Kind::Push, Kind::SendAck, Kind::SyncAck, Kind::JoinAck][usize::from(mask >> 6)];
            let targets: Vec<SessionRef> = (0..SLOTS)
                .filter(|k| mask & (1 << k) != 0)
                .map(|k| target(sim, k, mask & 0x10 != 0, mask & 0x20 != 0))
                .collect();
            let mut frame = BytesMut::new();
            proto::codec::encode_raw(&mut frame, kind, seq, &vec![0x5a; len]);
            sim.deliver(&targets, &frame.freeze());
        }
        op::KICK => {
            let k = r.u8();
            let s = target(sim, usize::from(k) % SLOTS, k & 0x10 != 0, k & 0x20 != 0);
            sim.kick(s, i32::from(r.u8()) - 4);
        }
        op::TERMINATE => {
            let k = r.u8();
            let s = target(sim, usize::from(k) % SLOTS, k & 0x10 != 0, k & 0x20 != 0);
            let mut frame = BytesMut::new();
            let msg = pb::Error {
                code: 2,
                message: "x".repeat(usize::from(r.u16()) % (MAX_BODY + 64)),
            };
            proto::encode(&mut frame, Kind::Error, 0, &msg);
            sim.terminate(s, &frame.freeze());
        }
        op::BOUNCE => {
            let k = r.u8();
            let s = target(sim, usize::from(k) % SLOTS, k & 0x10 != 0, false);
            let mut buf = BytesMut::from(&client_frame(r)[..]);
            if let Ok(Some(frame)) = proto::decode(&mut buf, 1 << 16) {
                sim.bounce(s, &frame);
            }
        }
        op::LINK => {
            let up = r.u8() & 1 == 1;
            if !up {
                // The uplink drops what was queued for the dead link, and
                // the logic tier forgets the link's sessions.
                sim.take_up();
                model.open.clear();
            }
            sim.link(up);
        }
        op::DRAIN => sim.start_drain(),
        op::UP_ROOM => sim.set_up_room(usize::from(r.u8() % 4)),
        _ => {
            let items = sim.take_up();
            model.uplink(sim, items);
        }
    }
}

/// A `SessionRef` for slot `key`: its live session's, or a stale epoch,
/// or another worker's.
fn target(sim: &Sim, key: usize, stale: bool, foreign: bool) -> SessionRef {
    let mut s = sim.session_ref(key).unwrap_or(ConnId::new(0, key).pack(0));
    if stale {
        s.epoch = s.epoch.wrapping_sub(1);
    }
    if foreign {
        s = ConnId::new(1, key).pack(s.epoch as u32);
    }
    s
}

fn encode(kind: Kind, seq: u32, msg: &impl Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    proto::encode(&mut out, kind, seq, msg);
    out.to_vec()
}

/// A well-formed client frame chosen by the input.
fn client_frame(r: &mut Reader) -> Vec<u8> {
    let which = r.u8();
    let seq = u32::from(r.u8());
    let channel = u64::from(r.u8() % 4);
    match which % 8 {
        0 | 1 => {
            let uin = u64::from(r.u8() % 4) + 1;
            let mut token = TokenKey::new(SECRET)
                .mint(uin, 1, UNIX0 / 1_000 + 3_600)
                .to_vec();
            if which % 8 == 1 {
                token[0] ^= 1;
            }
            let login = pb::Login {
                uin,
                device_id: 1,
                token: Bytes::from(token),
                network: i32::from(r.u8() % 3),
                client_version: "fuzz".into(),
            };
            encode(Kind::Login, seq, &login)
        }
        2 => encode(Kind::Heartbeat, seq, &pb::Heartbeat::default()),
        3 => {
            let req = pb::SendReq {
                channel,
                client_msg_id: u64::from(seq),
                body: Bytes::from(vec![1; usize::from(r.u8())]),
            };
            encode(Kind::Send, seq, &req)
        }
        4 => encode(Kind::Join, seq, &pb::Join { channel }),
        5 => encode(Kind::Leave, seq, &pb::Leave { channel }),
        6 => encode(Kind::Sync, seq, &pb::SyncReq::default()),
        _ => {
            // Any kind byte with an arbitrary short body.
            let kind = r.u8();
            let n = usize::from(r.u8() % 16);
            let body = r.bytes(n);
            let mut out = Vec::new();
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.push(1);
            out.push(kind);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&body);
            out
        }
    }
}

/// What the harness keeps beside the connections.
#[derive(Debug, Default)]
struct Model {
    /// Per live slot: the client side's view of its own stream.
    shadow: BTreeMap<usize, Shadow>,
    /// Sessions the uplink has been told are open.
    open: BTreeSet<SessionRef>,
    /// Slots freed so far that were checked.
    freed: usize,
}

/// The stream a client sent, decoded on its side.
#[derive(Debug, Default)]
struct Shadow {
    sent: BytesMut,
    /// When the session last got a whole frame while active.
    last_frame_ms: Option<u64>,
}

fn read(sim: &mut Sim, model: &mut Model, key: usize, bytes: &[u8]) {
    let Some(slot) = sim.slots.get(key) else {
        return;
    };
    let before = slot.conn.state();
    sim.read(key, bytes);
    let Some(shadow) = model.shadow.get_mut(&key) else {
        return;
    };
    shadow.sent.extend_from_slice(bytes);
    let mut whole = 0;
    while let Ok(Some(_)) = proto::decode(&mut shadow.sent, MAX_BODY) {
        whole += 1;
    }
    let after = sim.slots.get(key).map(|s| s.conn.state());
    if whole > 0 && after == Some(State::Active) && before != State::Closing {
        shadow.last_frame_ms = Some(sim.now.mono_ms);
    }
    if after != Some(State::Active) && after != Some(State::AwaitLogin) {
        shadow.sent.clear();
    }
}

impl Model {
    /// The uplink took `items` off the queue, in order.
    fn uplink(&mut self, sim: &Sim, items: Vec<Up>) {
        for item in items {
            match item {
                Up::Open { session, .. } => {
                    let (id, _) = ConnId::unpack(session);
                    assert_eq!(id.worker, 0, "an Open for another worker");
                    let twice = self.open.iter().any(|s| ConnId::unpack(*s).0 == id);
                    assert!(!twice, "two sessions open in slot {id:?}");
                    self.open.insert(session);
                }
                Up::Reopen { session, .. } => {
                    let (id, _) = ConnId::unpack(session);
                    let other = self
                        .open
                        .iter()
                        .any(|s| ConnId::unpack(*s).0 == id && *s != session);
                    assert!(!other, "a Reopen over another session of {id:?}");
                    self.open.insert(session);
                }
                Up::Close { session, .. } => {
                    assert!(self.open.remove(&session), "a Close of no open session");
                }
                Up::Client { session, .. } => {
                    assert!(
                        self.open.contains(&session),
                        "a request before its session's Open"
                    );
                }
            }
        }
        let _ = sim;
    }
}

fn invariants(sim: &mut Sim, model: &mut Model) {
    let cfg = config();
    for (_, slot) in sim.slots.iter() {
        well_formed(&slot.wire, slot.shut);
    }
    for freed in &sim.freed[model.freed..] {
        well_formed(&freed.wire, freed.shut);
        let shadow = model.shadow.remove(&freed.id.key());
        if freed.by_timer && freed.state == State::Active {
            let last = shadow
                .and_then(|s| s.last_frame_ms)
                .expect("an active session got a frame");
            let idle = u64::from(cfg.session.heartbeat.idle_ms(freed.hb_ms));
            assert!(freed.at_ms >= last + idle, "idle expiry early");
            assert!(
                freed.at_ms <= last + idle + TICK,
                "idle expiry over a tick late"
            );
        }
    }
    model.freed = sim.freed.len();
    assert_eq!(
        sim.sh.stats.connections_open.get(),
        sim.slots.len() as u64,
        "the open-connections gauge"
    );
}

/// Whole server frames, then at most part of one (none once `shut`).
fn well_formed(wire: &[u8], shut: bool) {
    let mut buf = BytesMut::from(wire);
    loop {
        match proto::decode(&mut buf, 1 << 20) {
            Ok(Some(f)) => assert!(
                matches!(
                    f.kind,
                    Kind::LoginAck
                        | Kind::HeartbeatAck
                        | Kind::SendAck
                        | Kind::Push
                        | Kind::SyncAck
                        | Kind::JoinAck
                        | Kind::LeaveAck
                        | Kind::Kick
                        | Kind::GoAway
                        | Kind::Error
                ),
                "a client kind sent to a client: {:?}",
                f.kind
            ),
            Ok(None) => break,
            Err(e) => panic!("a malformed frame sent: {e}"),
        }
    }
    assert!(!shut || buf.is_empty(), "write side shut mid-frame");
}
