//! [`MemStore`]: the [`Store`] interface over two ordered maps in memory.
//! **Not durable**: what it holds is gone when the process ends. Used by
//! the unit tests and by `--data-dir :memory:` (benchmarks that want the
//! logic tier without a disk). The same key layout as on disk, so both
//! implementations answer every read the same way.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Batch, DedupRecord, Op, Store, StoreError, StoredMsg, key};

#[derive(Debug, Default)]
struct Maps {
    msgs: BTreeMap<[u8; 16], (u64, Bytes)>,
    meta: BTreeMap<Vec<u8>, u64>,
}

/// An in-memory store (not durable).
#[derive(Debug, Default)]
pub struct MemStore {
    maps: Mutex<Maps>,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic elsewhere while holding the lock leaves plain maps that
        // are still consistent (each op is one insert or remove).
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemStore {
    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut m = self.lock();
        for op in &batch.ops {
            match op {
                Op::Message {
                    channel,
                    msg_id,
                    at_ms,
                    frame,
                } => {
                    m.msgs
                        .insert(key::message(*channel, *msg_id), (*at_ms, frame.clone()));
                }
                Op::DropMessage { channel, msg_id } => {
                    m.msgs.remove(&key::message(*channel, *msg_id));
                }
                Op::Head { channel, newest } => {
                    m.meta.insert(key::head(*channel).to_vec(), *newest);
                }
                Op::Dedup {
                    uin,
                    device,
                    cmid,
                    msg_id,
                } => {
                    m.meta
                        .insert(key::dedup(*uin, *device, *cmid).to_vec(), *msg_id);
                }
                Op::DropDedup { uin, device, cmid } => {
                    m.meta.remove(&key::dedup(*uin, *device, *cmid)[..]);
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

    fn dedup(&self, uin: u64, device: u32) -> Result<DedupRecord, StoreError> {
        let m = self.lock();
        let lo = key::dedup(uin, device, 0).to_vec();
        let hi = key::dedup(uin, device, u64::MAX).to_vec();
        let mut rec = DedupRecord::default();
        for (k, msg_id) in m.meta.range(lo..=hi).rev() {
            let cmid = key::u64_at(k, 13).unwrap_or(0);
            match rec.latest {
                None => rec.latest = Some((cmid, *msg_id)),
                Some(_) => rec.stale.push(cmid),
            }
        }
        Ok(rec)
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
