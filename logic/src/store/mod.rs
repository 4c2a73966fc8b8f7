//! The logic tier's durable state behind one interface, [`Store`]: what a
//! shard turn writes ([`Batch`], applied atomically) and the point and
//! range reads a shard makes when it loads state it evicted.
//!
//! Two implementations: [`FjallStore`] (the default: an embedded LSM
//! store on disk, `--data-dir DIR`) and [`MemStore`] (`--data-dir
//! :memory:`, unit tests and benchmarks; **not durable**: a restart
//! forgets everything).
//!
//! # What is stored (the key layout)
//!
//! All integers big-endian, so byte order is numeric order. Two fjall
//! keyspaces share one journal, so a batch spanning both is atomic:
//!
//! | keyspace | key | value | written by |
//! |----------|-----|-------|------------|
//! | `msgs` | `channel:8 first:8 last:8` | a run: `from:8`, then per message `at_ms:8 len:4` + the encoded PUSH frame | the channel's shard (see `runs.rs`; keys `channel:8 msg_id:8` holding one message are the format before runs, still read) |
//! | `meta` | `'h' channel:8` | newest `msg_id`:8 | the channel's shard |
//! | `meta` | `'d' uin:8 device:4 shard:2` | `client_msg_id`:8 `msg_id`:8 | that channel shard, with the message |
//! | `meta` | `'u' uin:8 room:8` | empty (user -> rooms) | the uin's shard |
//! | `meta` | `'r' room:8 uin:8` | empty (room -> members) | the uin's shard, in the same batch as `'u'` |
//!
//! - A run's key is written once, and trimmed or deleted by retention in
//!   compactions, so the frame is stored as the PUSH that SYNC replays,
//!   encoded once. A batch costs one message write per channel (its run of
//!   consecutive ids); the head and the dedup record are written once per
//!   channel and per device record per batch, however many messages the
//!   batch stored.
//! - The head `'h'` is separate from the messages because retention may
//!   delete every message of a channel while its counter must go on
//!   (PROTOCOL.md rule 6: no id reused).
//! - Dedup: each channel shard keeps, per device, the latest SEND it
//!   stored in a record of its own (`shard`), so two shards storing SENDs
//!   of one device at once never overwrite each other; the device's
//!   latest is the largest of its (at most one per shard) records. A
//!   device's SENDs reach the channel shards in increasing id order
//!   (`dedup` parks a lower id behind a larger one in flight), so each
//!   record only grows.
//! - Both membership directions are written by one shard in one batch, so
//!   they never disagree. `'u'` answers "is uin in room" and "which rooms"
//!   (loaded when a user is); `'r'` lists a room's members in uin order, a
//!   page at a time ([`Store::members`]).
//!
//! # Why fjall
//!
//! Measured on this machine before choosing (issue 11): fjall 3 about
//! 250,000 small messages/s with one fdatasync per 1,000-message batch and
//! 390,000/s per 5,000; redb about 60,000/s; sled is beta with crash
//! corruption reports; rocksdb is a long C++ build. fjall is pure Rust,
//! keeps one journal for all keyspaces (one sync makes everything
//! written so far durable, which is what group commit needs) and checks
//! every journal batch with a checksum.
//!
//! # Reads are synchronous
//!
//! (Writes are not: a shard submits its batch to the writer thread, see
//! `durable`, and its reads wait for its own pending writes first.)
//!
//! A shard reads the store only to load what it evicted (a user's rooms
//! and dedup latest at login, a channel's head at first touch, old
//! messages for a SYNC past the in-memory tail, a room's members). Each is
//! a point read or a short range in an LSM with bloom filters and a block
//! cache: microseconds, and rare next to the message path, which never
//! reads. Making them asynchronous would need every flow to park its
//! request until the load returns; the shard stays a plain state machine
//! instead, and [`MemStore`] answers the same calls in the unit tests.
//!
//! # Later implementations
//!
//! A shared store for several logic nodes (Redis, issue 14) implements the
//! same trait: the batch is a list of plain operations (put message, set
//! head, dedup record, join/leave) that map one-to-one onto Lua-scripted
//! commands, and no read needs a scan.

mod check;
mod fjall_store;
mod mem;
mod runs;

use std::collections::HashMap;

use bytes::Bytes;

pub use check::{JournalProblem, Repaired, check_journals};
pub use fjall_store::{FjallStore, OpenError};
pub use mem::MemStore;

/// A store failure: an I/O or storage-engine error (backend fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record under key {key}: {what}")]
    Corrupt { key: String, what: &'static str },
}

/// How long without writes before [`Store::idle`] is called.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// One write a shard turn asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store message `msg_id` of `channel` (its PUSH frame).
    Message {
        channel: u64,
        msg_id: u64,
        at_ms: u64,
        frame: Bytes,
    },
    /// The channel's newest `msg_id`.
    Head { channel: u64, newest: u64 },
    /// Channel shard `shard` stored a SEND of (`uin`, `device`) with
    /// `cmid` as `msg_id` (its latest for the device).
    Dedup {
        uin: u64,
        device: u32,
        shard: u16,
        cmid: u64,
        msg_id: u64,
    },
    /// `uin` joined `room` (both directions).
    Join { uin: u64, room: u64 },
    /// `uin` left `room` (both directions).
    Leave { uin: u64, room: u64 },
}

/// The writes of one shard turn (or of several, merged by the writer),
/// applied atomically and in order. A head, dedup record or membership
/// written twice in one batch is written once, with the later value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    /// Where each channel's `Head`, each device's `Dedup` and each
    /// membership's `Join`/`Leave` is in `ops`.
    slots: HashMap<Slot, usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Head(u64),
    Dedup(u64, u32, u16),
    Member(u64, u64),
}

impl Batch {
    /// Adds one write (a `Head`, `Dedup`, `Join` or `Leave` replaces the
    /// batch's earlier one for the same channel, device record or
    /// membership).
    pub fn push(&mut self, op: Op) {
        let slot = match op {
            Op::Head { channel, .. } => Some(Slot::Head(channel)),
            Op::Dedup {
                uin, device, shard, ..
            } => Some(Slot::Dedup(uin, device, shard)),
            Op::Join { uin, room } | Op::Leave { uin, room } => Some(Slot::Member(uin, room)),
            Op::Message { .. } => None,
        };
        if let Some(slot) = slot {
            match self.slots.entry(slot) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    self.ops[*e.get()] = op;
                    return;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.ops.len());
                }
            }
        }
        self.ops.push(op);
    }

    /// Appends a later batch's writes (as if pushed one by one).
    pub fn extend(&mut self, later: Batch) {
        if self.ops.is_empty() {
            *self = later;
            return;
        }
        for op in later.ops {
            self.push(op);
        }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.slots.clear();
    }
}

/// A message as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    pub msg_id: u64,
    pub at_ms: u64,
    pub frame: Bytes,
}

/// The logic tier's state store. Shared by every shard (`Arc<dyn
/// Store>`): each writes its own turns' batches and reads what it owns.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies `batch` atomically. When this returns, the batch has
    /// reached the OS (it survives the process being killed); it survives
    /// a power loss only after a later [`Store::sync`].
    fn write(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Makes everything written so far survive a power loss (fdatasync);
    /// may run on another thread while writes go on.
    fn sync(&self) -> Result<(), StoreError>;

    /// Nothing was written for a while ([`IDLE`]): a good moment for work
    /// that would stall writes under load (fjall: rotate the memtables, so
    /// their flush, which holds the journal lock through an fsync, runs
    /// now, and their memory is given back).
    fn idle(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether this store survives a restart at all (false for memory).
    fn durable(&self) -> bool;

    /// The newest `msg_id` of `channel` (0 if none was ever assigned).
    fn head(&self, channel: u64) -> Result<u64, StoreError>;

    /// Messages of `channel` with ids in `from..=to`, oldest first (those
    /// retention deleted are absent).
    fn messages(&self, channel: u64, from: u64, to: u64) -> Result<Vec<StoredMsg>, StoreError>;

    /// The rooms `uin` has joined, in id order.
    fn rooms(&self, uin: u64) -> Result<Vec<u64>, StoreError>;

    /// Up to `limit` members of `room` with uin above `after`, in uin
    /// order (a page of a member list).
    fn members(&self, room: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError>;

    /// The latest stored `(client_msg_id, msg_id)` of (`uin`, `device`).
    fn dedup(&self, uin: u64, device: u32) -> Result<Option<(u64, u64)>, StoreError>;

    /// Bytes the store occupies on disk (0 for memory).
    fn disk_bytes(&self) -> u64;
}

/// Keys of the `meta` keyspace (see the table in the module doc).
pub(crate) mod key {
    pub const HEAD: u8 = b'h';
    pub const DEDUP: u8 = b'd';
    pub const USER_ROOM: u8 = b'u';
    pub const ROOM_MEMBER: u8 = b'r';

    pub fn message(channel: u64, msg_id: u64) -> [u8; 16] {
        let mut k = [0; 16];
        k[..8].copy_from_slice(&channel.to_be_bytes());
        k[8..].copy_from_slice(&msg_id.to_be_bytes());
        k
    }

    pub fn head(channel: u64) -> [u8; 9] {
        tagged(HEAD, channel)
    }

    pub fn dedup_prefix(uin: u64, device: u32) -> [u8; 13] {
        let mut k = [0; 13];
        k[0] = DEDUP;
        k[1..9].copy_from_slice(&uin.to_be_bytes());
        k[9..].copy_from_slice(&device.to_be_bytes());
        k
    }

    pub fn dedup(uin: u64, device: u32, shard: u16) -> [u8; 15] {
        let mut k = [0; 15];
        k[..13].copy_from_slice(&dedup_prefix(uin, device));
        k[13..].copy_from_slice(&shard.to_be_bytes());
        k
    }

    /// A dedup record's value.
    pub fn dedup_value(cmid: u64, msg_id: u64) -> [u8; 16] {
        let mut v = [0; 16];
        v[..8].copy_from_slice(&cmid.to_be_bytes());
        v[8..].copy_from_slice(&msg_id.to_be_bytes());
        v
    }

    pub fn pair(tag: u8, a: u64, b: u64) -> [u8; 17] {
        let mut k = [0; 17];
        k[0] = tag;
        k[1..9].copy_from_slice(&a.to_be_bytes());
        k[9..].copy_from_slice(&b.to_be_bytes());
        k
    }

    pub fn tagged(tag: u8, a: u64) -> [u8; 9] {
        let mut k = [0; 9];
        k[0] = tag;
        k[1..].copy_from_slice(&a.to_be_bytes());
        k
    }

    /// The big-endian u64 at `at` in `b`, if there are 8 bytes.
    pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
        let s = b.get(at..at + 8)?;
        Some(u64::from_be_bytes(s.try_into().ok()?))
    }
}

#[cfg(test)]
mod run_tests;
#[cfg(test)]
mod tests;
