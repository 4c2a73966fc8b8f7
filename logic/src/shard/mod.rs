//! One shard of the logic tier's state, sans-io: the message types shards
//! exchange, the sharding functions, and [`Shard::handle`], which turns one
//! input into outputs collected in an [`Outbox`] (link bytes per gateway,
//! messages per shard). Threads and sockets live elsewhere (`worker`,
//! `net`); here time is an argument, so the whole flow is unit-tested with
//! several shards wired together in one thread.
//!
//! A shard plays two roles: the *user* role (`user.rs`) for the uins that
//! hash to it (router, dedup, room index, SYNC gathering) and the *channel*
//! role (`chan.rs`) for the channels that hash to it (counter, store,
//! membership, fan-out). An inbox lives on its owner's shard.

mod chan;
mod user;

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use proto::link::LinkMsg;

use crate::channel::{Channel, ChannelKind, Retention, kind_of};
use crate::dedup::Dedup;
use crate::reply::Origin;
use crate::router::{Router, Sess};

/// The shard owning `uin` (its router entry, dedup state and inbox).
pub fn shard_of_uin(uin: u64, shards: usize) -> usize {
    (mix(uin) % shards as u64) as usize
}

/// The shard owning `channel`: an inbox goes with its owner.
pub fn shard_of_channel(channel: u64, shards: usize) -> usize {
    match kind_of(channel) {
        ChannelKind::Inbox(uin) => shard_of_uin(uin, shards),
        _ => (mix(channel) % shards as u64) as usize,
    }
}

/// splitmix64's finalizer: sequential ids spread evenly over shards.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a shard is asked to do. `Link` comes from the network thread, the
/// rest from other shards (or from itself).
#[derive(Debug, Clone)]
pub enum ShardMsg {
    /// An `Open`, `Close` or `Client` from gateway `gw`, routed by uin.
    Link { gw: u64, msg: LinkMsg },
    /// Gateway `gw` has no link connection left: drop its sessions.
    GatewayDown { gw: u64 },
    /// The full current session list of `uin`, for a channel shard that
    /// holds some of its rooms (empty: forget the user).
    Presence { uin: u64, sessions: Vec<Sess> },
    /// Store and fan out a SEND that passed dedup.
    Send {
        origin: Origin,
        channel: u64,
        cmid: u64,
        body: Bytes,
    },
    /// How a forwarded SEND ended (`msg_id`, or the refusal status).
    SendDone {
        origin: Origin,
        cmid: u64,
        result: Result<u64, proto::pb::Status>,
    },
    /// Add `origin.uin` to the room and answer JOIN_ACK.
    Join { origin: Origin, channel: u64 },
    /// Remove `origin.uin` from the room and answer LEAVE_ACK.
    Leave { origin: Origin, channel: u64 },
    /// Push retained messages after the listed heads (`None`: only report
    /// the head) and report each channel's newest id.
    SyncPart {
        origin: Origin,
        req: u64,
        items: Vec<(u64, Option<u64>)>,
    },
    /// A part of SYNC request `req` is done.
    SyncDone {
        uin: u64,
        req: u64,
        heads: Vec<(u64, u64)>,
    },
}

/// Tunables of the shard logic.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    pub shards: usize,
    pub retention: Retention,
    /// Largest SEND body accepted; larger answers TOO_LARGE.
    pub max_send_body: usize,
    /// Largest client frame body accepted from the link.
    pub max_client_body: usize,
}

/// Counters a shard keeps (published by its worker).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub stored: u64,
    pub pushes: u64,
    pub duplicates: u64,
    pub syncs: u64,
}

/// Outputs of a turn. The driver must hand `io` to the network thread
/// before it sends `to_shard`: a shard's link output then always precedes
/// anything another shard does in answer to its messages (SYNC_ACK after
/// the PUSHes of its parts, PROTOCOL.md rule 9).
#[derive(Debug)]
pub struct Outbox {
    /// Link bytes per gateway id, in production order.
    pub io: Vec<(u64, BytesMut)>,
    /// Messages per destination shard (the own index stays empty).
    pub to_shard: Vec<Vec<ShardMsg>>,
    local: VecDeque<ShardMsg>,
    me: usize,
}

impl Outbox {
    /// An empty outbox for shard `me` of `shards`.
    pub fn new(me: usize, shards: usize) -> Outbox {
        Outbox {
            io: Vec::new(),
            to_shard: (0..shards).map(|_| Vec::new()).collect(),
            local: VecDeque::new(),
            me,
        }
    }

    /// The batch buffer for gateway `gw`.
    pub fn io(&mut self, gw: u64) -> &mut BytesMut {
        let i = match self.io.iter().position(|(g, _)| *g == gw) {
            Some(i) => i,
            None => {
                self.io.push((gw, BytesMut::new()));
                self.io.len() - 1
            }
        };
        &mut self.io[i].1
    }

    /// Queues `msg` for shard `to` (handled within this turn if it is us).
    pub fn send(&mut self, to: usize, msg: ShardMsg) {
        if to == self.me {
            self.local.push_back(msg);
        } else {
            self.to_shard[to].push(msg);
        }
    }

    /// True when there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.io.is_empty() && self.to_shard.iter().all(Vec::is_empty)
    }
}

#[derive(Debug)]
struct PendingSync {
    origin: Origin,
    remaining: usize,
    heads: Vec<(u64, u64)>,
}

/// One shard's state.
#[derive(Debug)]
pub struct Shard {
    me: usize,
    cfg: ShardConfig,
    router: Router,
    dedup: Dedup<(Origin, u64)>,
    channels: HashMap<u64, Channel>,
    /// Sessions of users owned by other shards that have rooms here.
    presence: HashMap<u64, Vec<Sess>>,
    /// The rooms hosted here that each user has joined, to keep the rooms'
    /// online sets current when the user's sessions come and go.
    local_rooms: HashMap<u64, Vec<u64>>,
    syncs: HashMap<u64, PendingSync>,
    next_sync: u64,
    counters: Counters,
}

impl Shard {
    /// Shard `me` of `cfg.shards`.
    pub fn new(me: usize, cfg: ShardConfig) -> Shard {
        Shard {
            me,
            cfg,
            router: Router::default(),
            dedup: Dedup::default(),
            channels: HashMap::new(),
            presence: HashMap::new(),
            local_rooms: HashMap::new(),
            syncs: HashMap::new(),
            next_sync: 0,
            counters: Counters::default(),
        }
    }

    /// Handles one input and everything it causes on this shard.
    pub fn handle(&mut self, now_ms: u64, msg: ShardMsg, out: &mut Outbox) {
        out.local.push_back(msg);
        while let Some(m) = out.local.pop_front() {
            self.step(now_ms, m, out);
        }
    }

    fn step(&mut self, now_ms: u64, msg: ShardMsg, out: &mut Outbox) {
        match msg {
            ShardMsg::Link { gw, msg } => self.link(gw, msg, out),
            ShardMsg::GatewayDown { gw } => {
                // Every shard hears this before anything that follows it on
                // the link, so scrubbing the copies here keeps later
                // fan-outs off the gone gateway; the owners' fresh presence
                // follows.
                let mut offline = Vec::new();
                self.presence.retain(|&uin, v| {
                    v.retain(|s| s.gw != gw);
                    if v.is_empty() {
                        offline.push(uin);
                    }
                    !v.is_empty()
                });
                for uin in offline {
                    self.online_changed(uin, false);
                }
                for uin in self.router.gateway_down(gw) {
                    self.publish_presence(uin, out);
                }
            }
            ShardMsg::Presence { uin, sessions } => {
                let online = !sessions.is_empty();
                if online {
                    self.presence.insert(uin, sessions);
                } else {
                    self.presence.remove(&uin);
                }
                self.online_changed(uin, online);
            }
            ShardMsg::Send {
                origin,
                channel,
                cmid,
                body,
            } => self.store(now_ms, origin, channel, cmid, body, out),
            ShardMsg::SendDone {
                origin,
                cmid,
                result,
            } => self.send_done(origin, cmid, result, out),
            ShardMsg::Join { origin, channel } => self.join_here(origin, channel, out),
            ShardMsg::Leave { origin, channel } => self.leave_here(origin, channel, out),
            ShardMsg::SyncPart { origin, req, items } => {
                self.sync_part(now_ms, origin, req, items, out)
            }
            ShardMsg::SyncDone { uin, req, heads } => self.sync_done(uin, req, heads, out),
        }
    }

    /// Applies retention to every channel and forgets channels that hold
    /// nothing (no members, no messages, no id yet assigned).
    pub fn sweep(&mut self, now_ms: u64) {
        let ret = self.cfg.retention;
        self.channels.retain(|_, c| {
            c.prune(now_ms, ret);
            !(c.is_idle() && c.newest() == 0)
        });
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Sessions routed by this shard.
    pub fn sessions(&self) -> usize {
        self.router.session_count()
    }

    /// Messages retained by this shard.
    pub fn retained(&self) -> usize {
        self.channels.values().map(Channel::retained).sum()
    }

    /// Marks `uin` online or offline in the rooms it joined here.
    fn online_changed(&mut self, uin: u64, online: bool) {
        for room in self.local_rooms.get(&uin).into_iter().flatten() {
            if let Some(c) = self.channels.get_mut(room) {
                c.set_online(uin, online);
            }
        }
    }

    /// The sessions of `uin` as this shard knows them: its own router for
    /// the users it owns, the presence copies for the others.
    fn sessions_of<'a>(
        me: usize,
        shards: usize,
        router: &'a Router,
        presence: &'a HashMap<u64, Vec<Sess>>,
        uin: u64,
    ) -> &'a [Sess] {
        if shard_of_uin(uin, shards) == me {
            router.sessions(uin)
        } else {
            presence.get(&uin).map_or(&[], Vec::as_slice)
        }
    }
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
