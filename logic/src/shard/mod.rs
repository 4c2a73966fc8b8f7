//! One shard of the logic tier's state, sans-io: the message types shards
//! exchange, the sharding functions, and [`Shard::handle`], which turns one
//! input into outputs collected in an [`Outbox`] (link bytes per gateway,
//! messages per shard). Threads and sockets live elsewhere (`worker`,
//! `net`); here time is an argument, so the whole flow is unit-tested with
//! several shards wired together in one thread.
//!
//! A shard plays two roles: the *user* role (`user.rs`) for the uins that
//! hash to it (router, dedup, room index, SYNC gathering) and the *channel*
//! role (`chan.rs`) for the channels that hash to it (counter, stored
//! messages, fan-out). An inbox lives on its owner's shard.
//!
//! # Durability
//!
//! A turn's state changes are written as one [`Batch`] in the outbox
//! ([`Outbox::batch`]); the driver applies it to the [`Store`] and
//! releases the turn's link output and peer messages only once the batch
//! is durable in the configured sense (see `worker`). So every SEND_ACK,
//! every PUSH (a client never sees a `msg_id` a crash could give to
//! another body), every JOIN_ACK and every message to another shard
//! comes after the state it reports is stored. The shard itself never
//! waits: it reads the store synchronously only to load what it evicted
//! (see [`crate::store`] for why), and evicts in [`Shard::sweep`], which
//! the driver calls between turns, after the previous batch was applied,
//! so a reload always sees every write.
//!
//! # Memory
//!
//! Bounded by what is active: users with sessions (router entry, dedup
//! state), loaded channels (counter and newest messages, evicted after
//! `idle_ms` without use), the online members of rooms (`online.rs`), and
//! requests in flight. Users and channels are reloaded from the store
//! when next needed.

mod chan;
mod online;
mod user;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proto::link::LinkMsg;

use crate::channel::{Channel, ChannelKind, Retention, kind_of};
use crate::dedup::Dedup;
use crate::reply::Origin;
use crate::router::{Router, Sess};
use crate::store::{Batch, Store, StoreError};
use online::Online;

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
    /// The full current session list of `uin` and which of its rooms the
    /// receiving shard hosts (no sessions: forget the user).
    Presence {
        uin: u64,
        sessions: Vec<Sess>,
        rooms: Vec<u64>,
    },
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
    /// `origin.uin` (its sessions attached when it lives on another
    /// shard) joined the room, stored by its shard: count it online and
    /// answer JOIN_ACK.
    Join {
        origin: Origin,
        channel: u64,
        sessions: Vec<Sess>,
    },
    /// `origin.uin` left the room, stored by its shard: count it offline
    /// there and answer LEAVE_ACK.
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
    /// Rooms one user may join; a JOIN past it answers TOO_LARGE.
    pub max_rooms_per_user: usize,
    /// A loaded channel unused this long is evicted from memory.
    pub idle_ms: u64,
}

/// Counters a shard keeps (published by its worker).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub stored: u64,
    pub pushes: u64,
    pub duplicates: u64,
    pub syncs: u64,
    /// Online-set inserts and removes (what logins and JOINs cost).
    pub online_updates: u64,
    /// Users, channels and devices loaded from the store.
    pub loads: u64,
}

/// What a shard holds in memory (eviction keeps it to what is active).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub users: usize,
    pub channels: usize,
    pub devices: usize,
    pub online_rooms: usize,
    pub remote_users: usize,
}

/// Outputs of a turn. The driver applies `batch` to the store first and
/// releases the rest only once it is durable; it must hand `io` to the
/// network thread before it sends `to_shard`: a shard's link output then
/// always precedes anything another shard does in answer to its messages
/// (SYNC_ACK after the PUSHes of its parts, PROTOCOL.md rule 9).
#[derive(Debug)]
pub struct Outbox {
    /// The turn's writes.
    pub batch: Batch,
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
            batch: Batch::default(),
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
        self.batch.is_empty() && self.io.is_empty() && self.to_shard.iter().all(Vec::is_empty)
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
    store: Arc<dyn Store>,
    router: Router,
    dedup: Dedup<(Origin, u64)>,
    channels: HashMap<u64, Channel>,
    online: Online,
    /// Users whose last session ended (or who were loaded without one):
    /// evicted at the next sweep if still idle.
    idle_users: Vec<u64>,
    syncs: HashMap<u64, PendingSync>,
    next_sync: u64,
    counters: Counters,
    /// The first store failure; the driver stops the server on it.
    fault: Option<StoreError>,
}

impl Shard {
    /// Shard `me` of `cfg.shards`, over `store`.
    pub fn new(me: usize, cfg: ShardConfig, store: Arc<dyn Store>) -> Shard {
        Shard {
            me,
            cfg,
            store,
            router: Router::default(),
            dedup: Dedup::default(),
            channels: HashMap::new(),
            online: Online::default(),
            idle_users: Vec::new(),
            syncs: HashMap::new(),
            next_sync: 0,
            counters: Counters::default(),
            fault: None,
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
                self.online.gateway_down(gw);
                for uin in self.router.gateway_down(gw) {
                    self.publish_presence(uin, out);
                }
            }
            ShardMsg::Presence {
                uin,
                sessions,
                rooms,
            } => self.online.set_remote(uin, sessions, rooms),
            ShardMsg::Send {
                origin,
                channel,
                cmid,
                body,
            } => self.store_message(now_ms, origin, channel, cmid, body, out),
            ShardMsg::SendDone {
                origin,
                cmid,
                result,
            } => self.send_done(origin, cmid, result, out),
            ShardMsg::Join {
                origin,
                channel,
                sessions,
            } => self.join_here(now_ms, origin, channel, sessions, out),
            ShardMsg::Leave { origin, channel } => self.leave_here(origin, channel, out),
            ShardMsg::SyncPart { origin, req, items } => {
                self.sync_part(now_ms, origin, req, items, out)
            }
            ShardMsg::SyncDone { uin, req, heads } => self.sync_done(uin, req, heads, out),
        }
    }

    /// Applies retention to the loaded channels and evicts what is idle:
    /// channels unused for `idle_ms`, users without sessions or SENDs in
    /// flight. Call between turns, after the last batch was applied.
    pub fn sweep(&mut self, now_ms: u64) {
        let (ret, idle) = (self.cfg.retention, self.cfg.idle_ms);
        self.channels.retain(|_, c| {
            c.prune(now_ms, ret);
            now_ms.saturating_sub(c.touched_ms()) < idle
        });
        let mut keep = Vec::new();
        for uin in std::mem::take(&mut self.idle_users) {
            if !self.router.sessions(uin).is_empty() {
                continue; // back online: listed again when it goes.
            }
            if self.dedup.busy(uin) {
                keep.push(uin);
                continue;
            }
            let _ = self.router.evict(uin);
            let _ = self.dedup.forget(uin);
        }
        keep.sort_unstable();
        keep.dedup();
        self.idle_users = keep;
        // Give back what a burst of logins left behind (only when mostly
        // empty: a shrink rehashes everything).
        if self.channels.len() < self.channels.capacity() / 4 {
            self.channels.shrink_to_fit();
        }
        self.router.shrink_to_fit();
        self.dedup.shrink_to_fit();
        self.idle_users.shrink_to_fit();
    }

    /// Takes the store failure this shard met, if any. Its outputs since
    /// must not be released.
    pub fn take_fault(&mut self) -> Option<StoreError> {
        self.fault.take()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        Counters {
            online_updates: self.online.updates,
            ..self.counters
        }
    }

    /// Sessions routed by this shard.
    pub fn sessions(&self) -> usize {
        self.router.session_count()
    }

    /// Messages held in memory (the newest of each loaded channel).
    pub fn retained(&self) -> usize {
        self.channels.values().map(Channel::in_memory).sum()
    }

    /// What is loaded in memory.
    pub fn loaded(&self) -> Loaded {
        Loaded {
            users: self.router.user_count(),
            channels: self.channels.len(),
            devices: self.dedup.devices(),
            online_rooms: self.online.room_count(),
            remote_users: self.online.remote_count(),
        }
    }

    /// Records a store failure (the first one counts).
    fn fail(&mut self, e: StoreError) {
        tracing::error!(shard = self.me, error = %e, "store failure");
        self.fault.get_or_insert(e);
    }

    /// Loads `uin`'s router entry (its rooms) if needed; false on a store
    /// failure.
    fn load_user(&mut self, uin: u64) -> bool {
        if self.router.loaded(uin) {
            return true;
        }
        match self.store.rooms(uin) {
            Ok(rooms) => {
                self.counters.loads += 1;
                self.router.load(uin, rooms);
                self.idle_users.push(uin);
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// Loads channel `ch` (its stored head) if needed.
    fn load_channel(&mut self, ch: u64, now_ms: u64) -> Option<&mut Channel> {
        if !self.channels.contains_key(&ch) {
            match self.store.head(ch) {
                Ok(newest) => {
                    self.counters.loads += 1;
                    self.channels.insert(ch, Channel::loaded(newest, now_ms));
                }
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
        let c = self.channels.get_mut(&ch)?;
        c.touch(now_ms);
        Some(c)
    }

    /// The sessions of `uin` as this shard knows them: its own router for
    /// the users it owns, the presence copies for the others.
    fn sessions_of<'a>(
        me: usize,
        shards: usize,
        router: &'a Router,
        online: &'a Online,
        uin: u64,
    ) -> &'a [Sess] {
        if shard_of_uin(uin, shards) == me {
            router.sessions(uin)
        } else {
            online.sessions(uin)
        }
    }
}

#[cfg(test)]
mod cap_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
