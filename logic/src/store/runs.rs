//! The `msgs` keyspace's record formats: one key per *run* of a channel's
//! consecutive messages written in one batch (the current format), and
//! one key per message (the format of data directories written before
//! runs; still read, never written).
//!
//! | format | key | value |
//! |--------|-----|-------|
//! | run | `channel:8 first:8 last:8` | `from:8` then per message `at_ms:8 len:4 frame` |
//! | single (old) | `channel:8 msg_id:8` | `at_ms:8 frame` |
//!
//! The key length tells them apart. A run holds the messages `from..=last`
//! (`from` is `first` until retention trims the run's oldest messages in
//! a compaction, which rewrites the value and keeps the key), oldest
//! first. Keys still sort by (channel, first id), and runs of one channel
//! never overlap (a msg_id is assigned once), so the run holding id `n`
//! is the last key at or below `channel:n`.
//!
//! Why runs: a SEND cost one fjall insert (a memtable skiplist node, an
//! allocation, journal framing) per message; a run costs one per channel
//! per batch, which for a busy channel is one per hundreds of messages.

use bytes::Bytes;

use super::StoredMsg;
use super::key::u64_at;

/// Bytes a run record adds to its frame.
const RECORD_HEADER: usize = 12;
/// Most messages in one run, and (roughly) most value bytes: longer runs
/// are split, so a SYNC of a few messages never reads a huge value.
pub const MAX_RUN_MSGS: usize = 512;
pub const MAX_RUN_BYTES: usize = 64 << 10;

/// The key of a run of `channel` holding `first..=last`.
pub fn run_key(channel: u64, first: u64, last: u64) -> [u8; 24] {
    let mut k = [0; 24];
    k[..8].copy_from_slice(&channel.to_be_bytes());
    k[8..16].copy_from_slice(&first.to_be_bytes());
    k[16..].copy_from_slice(&last.to_be_bytes());
    k
}

/// Builds a run's value, message by message (ids consecutive from `from`).
#[derive(Debug)]
pub struct RunBuilder {
    pub first: u64,
    pub last: u64,
    value: Vec<u8>,
}

impl RunBuilder {
    /// A run starting at `first`.
    pub fn new(first: u64) -> RunBuilder {
        let mut value = Vec::with_capacity(4096);
        value.extend_from_slice(&first.to_be_bytes());
        RunBuilder {
            first,
            // Empty: `last` is one below `first` (wrapping, so id 0 works).
            last: first.wrapping_sub(1),
            value,
        }
    }

    /// Whether message `id` can be appended (the next id, within limits).
    pub fn takes(&self, id: u64) -> bool {
        id == self.last.wrapping_add(1)
            && (self.last.wrapping_add(1).wrapping_sub(self.first) as usize) < MAX_RUN_MSGS
            && self.value.len() < MAX_RUN_BYTES
    }

    /// Appends the next message.
    pub fn push(&mut self, at_ms: u64, frame: &[u8]) {
        self.last = self.last.wrapping_add(1);
        self.value.extend_from_slice(&at_ms.to_be_bytes());
        self.value
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.value.extend_from_slice(frame);
    }

    /// The value to store.
    pub fn finish(self) -> Vec<u8> {
        self.value
    }
}

/// One stored message as found in a record, borrowed from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub msg_id: u64,
    pub at_ms: u64,
    pub frame: &'a [u8],
}

impl Item<'_> {
    /// An owned copy for a reader.
    pub fn to_stored(self) -> StoredMsg {
        StoredMsg {
            msg_id: self.msg_id,
            at_ms: self.at_ms,
            frame: Bytes::copy_from_slice(self.frame),
        }
    }
}

/// Why a record could not be read.
pub type Bad = &'static str;

/// The channel a `msgs` key belongs to.
pub fn channel_of(key: &[u8]) -> Option<u64> {
    u64_at(key, 0)
}

/// The messages of one record (either format), oldest first.
pub fn items<'a>(key: &[u8], value: &'a [u8]) -> Result<Vec<Item<'a>>, Bad> {
    match key.len() {
        16 => {
            let msg_id = u64_at(key, 8).ok_or("message key length")?;
            let at_ms = u64_at(value, 0).ok_or("message value length")?;
            Ok(vec![Item {
                msg_id,
                at_ms,
                frame: &value[8..],
            }])
        }
        24 => {
            let last = u64_at(key, 16).ok_or("run key length")?;
            let mut id = u64_at(value, 0).ok_or("run value length")?;
            let mut at = 8;
            let mut out = Vec::new();
            while at < value.len() {
                let at_ms = u64_at(value, at).ok_or("run record header")?;
                let len = value
                    .get(at + 8..at + RECORD_HEADER)
                    .and_then(|s| s.try_into().ok())
                    .map(u32::from_be_bytes)
                    .ok_or("run record header")? as usize;
                let start = at + RECORD_HEADER;
                let frame = value.get(start..start + len).ok_or("run record length")?;
                out.push(Item {
                    msg_id: id,
                    at_ms,
                    frame,
                });
                id += 1;
                at = start + len;
            }
            if out.is_empty() || id - 1 != last {
                return Err("run record count");
            }
            Ok(out)
        }
        _ => Err("message key length"),
    }
}

/// What retention does to one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Trim {
    Keep,
    Remove,
    /// Keep the record with this value (its newest messages).
    Replace(Vec<u8>),
}

/// Retention on one record: `keep` says which messages stay; those it
/// refuses are the oldest (retention drops from the old end), so the kept
/// ones stay consecutive.
pub fn trim(key: &[u8], items: &[Item<'_>], keep: impl Fn(&Item<'_>) -> bool) -> Trim {
    let Some(first_kept) = items.iter().position(keep) else {
        return Trim::Remove;
    };
    if first_kept == 0 || key.len() != 24 {
        return Trim::Keep;
    }
    let kept = &items[first_kept..];
    let mut b = RunBuilder::new(kept[0].msg_id);
    for it in kept {
        b.push(it.at_ms, it.frame);
    }
    Trim::Replace(b.finish())
}
