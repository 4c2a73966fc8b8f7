//! [`MemStore`]: the [`Store`] interface over two ordered maps in memory.
//! **Not durable**: what it holds is gone when the process ends. Used by
//! the unit tests and by `--data-dir :memory:` (benchmarks that want the
//! logic tier without a disk). The same key layout as on disk, so both
//! implementations answer every read the same way.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Batch, Op, Store, StoreError, StoredMsg, key};
use crate::channel::Retention;

#[derive(Debug, Default)]
struct Maps {
    msgs: BTreeMap<[u8; 16], (u64, Bytes)>,
    meta: BTreeMap<Vec<u8>, u64>,
    dedup: BTreeMap<[u8; 15], (u64, u64)>,
}

/// An in-memory store (not durable).
#[derive(Debug)]
pub struct MemStore {
    maps: Mutex<Maps>,
    retention: Retention,
}

impl Default for MemStore {
    /// A store that retains everything (tests).
    fn default() -> Self {
        MemStore::new(Retention {
            max_count: usize::MAX,
            max_age_ms: u64::MAX,
        })
    }
}

impl MemStore {
    /// A store that drops messages past `retention` as it writes.
    pub fn new(retention: Retention) -> MemStore {
        MemStore {
            maps: Mutex::new(Maps::default()),
            retention,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic elsewhere while holding the lock leaves plain maps that
        // are still consistent (each op is one insert or remove).
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemStore {
    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut m = self.lock();
        let ret = self.retention;
        for op in batch.ops() {
            match op {
                Op::Message {
                    channel,
                    msg_id,
                    at_ms,
                    frame,
                } => {
                    m.msgs
                        .insert(key::message(*channel, *msg_id), (*at_ms, frame.clone()));
                    // Retention as it writes: ids are contiguous, so the
                    // count limit drops exactly one; age drops from the front.
                    let n = u64::try_from(ret.max_count).unwrap_or(u64::MAX);
                    if let Some(old) = msg_id.checked_sub(n) {
                        // With a limit of 0 that is the message itself.
                        m.msgs.remove(&key::message(*channel, old));
                    }
                    let oldest = ret.oldest_allowed_ms(*at_ms);
                    let expired: Vec<[u8; 16]> = m
                        .msgs
                        .range(key::message(*channel, 0)..key::message(*channel, *msg_id))
                        .take_while(|(_, (at, _))| *at < oldest)
                        .map(|(k, _)| *k)
                        .collect();
                    for k in expired {
                        m.msgs.remove(&k);
                    }
                }
                Op::Head { channel, newest } => {
                    m.meta.insert(key::head(*channel).to_vec(), *newest);
                }
                Op::Dedup {
                    uin,
                    device,
                    shard,
                    cmid,
                    msg_id,
                } => {
                    m.dedup
                        .insert(key::dedup(*uin, *device, *shard), (*cmid, *msg_id));
                }
                Op::Join { uin, room } => {
                    m.meta
                        .insert(key::pair(key::USER_ROOM, *uin, *room).to_vec(), 0);
                    m.meta
                        .insert(key::pair(key::ROOM_MEMBER, *room, *uin).to_vec(), 0);
                }
                Op::Leave { uin, room } => {
                    m.meta.remove(&key::pair(key::USER_ROOM, *uin, *room)[..]);
                    m.meta.remove(&key::pair(key::ROOM_MEMBER, *room, *uin)[..]);
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }

    fn head(&self, channel: u64) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .meta
            .get(&key::head(channel)[..])
            .copied()
            .unwrap_or(0))
    }

    fn messages(&self, channel: u64, from: u64, to: u64) -> Result<Vec<StoredMsg>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let m = self.lock();
        let range = key::message(channel, from)..=key::message(channel, to);
        Ok(m.msgs
            .range(range)
            .map(|(k, (at_ms, frame))| StoredMsg {
                msg_id: key::u64_at(k, 8).unwrap_or(0),
                at_ms: *at_ms,
                frame: frame.clone(),
            })
            .collect())
    }

    fn rooms(&self, uin: u64) -> Result<Vec<u64>, StoreError> {
        let m = self.lock();
        let lo = key::pair(key::USER_ROOM, uin, 0).to_vec();
        let hi = key::pair(key::USER_ROOM, uin, u64::MAX).to_vec();
        Ok(m.meta
            .range(lo..=hi)
            .filter_map(|(k, _)| key::u64_at(k, 9))
            .collect())
    }

    fn members(&self, room: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let m = self.lock();
        let lo = key::pair(key::ROOM_MEMBER, room, first).to_vec();
        let hi = key::pair(key::ROOM_MEMBER, room, u64::MAX).to_vec();
        Ok(m.meta
            .range(lo..=hi)
            .take(limit)
            .filter_map(|(k, _)| key::u64_at(k, 9))
            .collect())
    }

    fn dedup(&self, uin: u64, device: u32) -> Result<Option<(u64, u64)>, StoreError> {
        let m = self.lock();
        let range = key::dedup(uin, device, 0)..=key::dedup(uin, device, u16::MAX);
        Ok(m.dedup.range(range).map(|(_, v)| *v).max())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
