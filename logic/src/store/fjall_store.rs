//! [`FjallStore`]: the [`Store`] on disk, in a fjall 3 database (see the
//! module doc of `store` for the key layout and why fjall).
//!
//! Layout of `--data-dir DIR`: `DIR/logic.lock` (held with `flock` for
//! the life of the process: a second logic server on the same directory
//! refuses to start, naming it) and `DIR/fjall/` (the database: journals
//! `N.jnl`, keyspaces, fjall's own lock).
//!
//! Durability: a batch is one fjall write batch with
//! `PersistMode::Buffer` (fjall's journal writer buffers in user space;
//! `Buffer` hands the batch to the OS, so it survives the process being
//! killed). [`Store::sync`] makes it survive a power loss: it calls
//! `fdatasync` on the newest journal through a file handle of its own, so
//! a sync does not hold fjall's journal lock and shards keep writing
//! while it runs (group commit). That is sound because fjall syncs a
//! journal in full before it creates the next one, so a sync of the
//! newest journal covers everything written before the sync started.
//!
//! Retention on disk costs the message path nothing: a compaction filter
//! drops, while fjall compacts in the background, every message past the
//! maximum age and every message more than `max_count` below its
//! channel's stored head (one head lookup per channel per compaction).
//! Until then they take disk but are never served: the shard filters
//! reads by both limits.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use lsm_tree::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};

use super::check::{JournalProblem, Repaired, check_journals};
use super::runs::{self, RunBuilder, Trim, run_key};
use super::{Batch, Op, Store, StoreError, StoredMsg, key};
use crate::channel::Retention;

/// fjall's background threads (flushes and compactions). One: with two
/// or more, fjall 3.1's first worker hands every compaction request back
/// to the queue for the others, and while they are busy it spins on that
/// queue (18 % of the logic server's CPU in a one-to-one run, measured
/// with `perf`); one worker does both in turn.
const WORKER_THREADS: usize = 1;
/// Block cache shared by both keyspaces. Small on purpose: reads are
/// loads of evicted state, not the message path.
const CACHE_BYTES: u64 = 8 << 20;
/// Journals kept before fjall flushes memtables: bounds the replay at
/// restart (at least the memtables' total, or fjall flushes early).
const MAX_JOURNALING_BYTES: u64 = 256 << 20;
/// Memtable sizes: the memory fjall holds for recent writes, and how often
/// it flushes under load. Each flush holds fjall's journal lock through
/// an `fsync` of the journal (0.2-15 ms on this disk), stalling every
/// commit meanwhile: with 8 and 4 MiB a 20,000 msg/s load flushed about
/// once a second and its p99 was 21-32 ms; larger memtables flush rarely
/// under load, and [`Store::idle`] flushes them when writes stop (so
/// their memory goes back too). Figures in the README.
const MSGS_MEMTABLE_BYTES: u64 = 32 << 20;
const META_MEMTABLE_BYTES: u64 = 16 << 20;

/// The `meta` keyspace as the retention filter sees it.
type Heads = Arc<Mutex<Option<Keyspace>>>;

/// What fjall's builder takes to install compaction filters.
type FilterAssigner = Arc<dyn Fn(&str) -> Option<Arc<dyn Factory>> + Send + Sync>;

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(
        "data directory {dir} is in use by another logic server (lock file {lock} is held); \
         stop it or pass another --data-dir"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(transparent)]
    Journal(#[from] JournalProblem),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the store in {path}: {source}")]
    Engine { path: PathBuf, source: fjall::Error },
}

/// The store on disk.
pub struct FjallStore {
    db: Database,
    msgs: Keyspace,
    meta: Keyspace,
    dir: PathBuf,
    /// Written since the memtables were last rotated while idle.
    dirty: AtomicBool,
    /// The journal the last sync used, kept open.
    sync_file: Mutex<Option<(PathBuf, File)>>,
    /// The retention filter's handle on `meta`; emptied on drop, or the
    /// filter (held by the database) would keep the database alive.
    heads: Heads,
    /// Held for the life of the store: the directory's lock.
    _lock: File,
    /// Torn tails cut off when opening.
    pub repaired: Vec<Repaired>,
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (creating if missing) the store in `dir`.
    pub fn open(dir: &Path, retention: Retention) -> Result<FjallStore, OpenError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("logic.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    dir: dir.to_owned(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let db_dir = dir.join("fjall");
        let repaired = check_journals(&db_dir)?;
        let heads: Heads = Arc::new(Mutex::new(None));
        let factory = Arc::new(RetentionFactory {
            retention,
            heads: std::panic::AssertUnwindSafe(heads.clone()),
        });
        let assign: FilterAssigner = Arc::new(move |name: &str| {
            (name == "msgs").then(|| factory.clone() as Arc<dyn Factory>)
        });
        let engine = |source| OpenError::Engine {
            path: db_dir.clone(),
            source,
        };
        let db = Database::builder(&db_dir)
            .worker_threads(WORKER_THREADS)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(MAX_JOURNALING_BYTES)
            .with_compaction_filter_factories(assign)
            .open()
            .map_err(engine)?;
        let msgs = db
            .keyspace("msgs", || {
                KeyspaceCreateOptions::default().max_memtable_size(MSGS_MEMTABLE_BYTES)
            })
            .map_err(engine)?;
        let meta = db
            .keyspace("meta", || {
                KeyspaceCreateOptions::default().max_memtable_size(META_MEMTABLE_BYTES)
            })
            .map_err(engine)?;
        *heads.lock().unwrap_or_else(|e| e.into_inner()) = Some(meta.clone());
        Ok(FjallStore {
            db,
            msgs,
            meta,
            dir: db_dir,
            dirty: AtomicBool::new(false),
            sync_file: Mutex::new(None),
            heads,
            _lock: lock,
            repaired,
        })
    }

    /// Flushes the memtables and compacts everything (retention's age
    /// filter runs on every message). For tests and tools: fjall compacts
    /// by itself as data arrives.
    pub fn compact(&self) -> Result<(), StoreError> {
        for ks in [&self.msgs, &self.meta] {
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()?;
        }
        Ok(())
    }

    /// Writes one message in the format of data directories from before
    /// runs (one key per message), as such a directory holds it.
    #[cfg(test)]
    pub(crate) fn write_old_format(
        &self,
        channel: u64,
        msg_id: u64,
        at_ms: u64,
        frame: &[u8],
    ) -> Result<(), StoreError> {
        let mut v = at_ms.to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        self.msgs.insert(key::message(channel, msg_id), v)?;
        Ok(())
    }

    /// Tables (flushed memtables) in both keyspaces.
    #[cfg(test)]
    pub(crate) fn table_count(&self) -> usize {
        self.msgs.table_count() + self.meta.table_count()
    }

    /// Keys in the `msgs` keyspace (runs and old single messages).
    #[cfg(test)]
    pub(crate) fn message_keys(&self) -> usize {
        self.msgs.iter().count()
    }

    /// The newest journal file in the database directory.
    fn newest_journal(&self) -> std::io::Result<Option<PathBuf>> {
        let mut best: Option<(u64, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jnl"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id
                && best.as_ref().is_none_or(|(b, _)| id > *b)
            {
                best = Some((id, path));
            }
        }
        Ok(best.map(|(_, p)| p))
    }
}

fn corrupt(k: &[u8], what: &'static str) -> StoreError {
    StoreError::Corrupt {
        key: k.iter().map(|b| format!("{b:02x}")).collect(),
        what,
    }
}

impl Store for FjallStore {
    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        // Messages as runs: one key per channel's consecutive ids.
        let mut msgs: Vec<(u64, u64, u64, &Bytes)> = batch
            .ops()
            .iter()
            .filter_map(|op| match op {
                Op::Message {
                    channel,
                    msg_id,
                    at_ms,
                    frame,
                } => Some((*channel, *msg_id, *at_ms, frame)),
                _ => None,
            })
            .collect();
        msgs.sort_unstable_by_key(|m| (m.0, m.1));
        let mut run: Option<(u64, RunBuilder)> = None;
        for (channel, msg_id, at_ms, frame) in msgs {
            if let Some((ch, r)) = run.take_if(|(ch, r)| *ch != channel || !r.takes(msg_id)) {
                b.insert(&self.msgs, run_key(ch, r.first, r.last), r.finish());
            }
            let (_, r) = run.get_or_insert_with(|| (channel, RunBuilder::new(msg_id)));
            r.push(at_ms, frame);
        }
        if let Some((ch, r)) = run {
            b.insert(&self.msgs, run_key(ch, r.first, r.last), r.finish());
        }
        for op in batch.ops() {
            match op {
                Op::Message { .. } => {}
                Op::Head { channel, newest } => {
                    b.insert(&self.meta, key::head(*channel), newest.to_be_bytes());
                }
                Op::Dedup {
                    uin,
                    device,
                    shard,
                    cmid,
                    msg_id,
                } => {
                    b.insert(
                        &self.meta,
                        key::dedup(*uin, *device, *shard),
                        key::dedup_value(*cmid, *msg_id),
                    );
                }
                Op::Join { uin, room } => {
                    b.insert(&self.meta, key::pair(key::USER_ROOM, *uin, *room), []);
                    b.insert(&self.meta, key::pair(key::ROOM_MEMBER, *room, *uin), []);
                }
                Op::Leave { uin, room } => {
                    b.remove(&self.meta, key::pair(key::USER_ROOM, *uin, *room));
                    b.remove(&self.meta, key::pair(key::ROOM_MEMBER, *room, *uin));
                }
            }
        }
        b.commit()?;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let Some(newest) = self.newest_journal()? else {
            return Ok(());
        };
        let mut slot = self.sync_file.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(p, _)| *p != newest) {
            *slot = Some((newest.clone(), File::open(&newest)?));
        }
        if let Some((_, f)) = slot.as_ref() {
            f.sync_data()?;
        }
        Ok(())
    }

    fn durable(&self) -> bool {
        true
    }

    fn idle(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            for ks in [&self.msgs, &self.meta] {
                ks.rotate_memtable()?;
            }
        }
        Ok(())
    }

    fn head(&self, channel: u64) -> Result<u64, StoreError> {
        let k = key::head(channel);
        match self.meta.get(k)? {
            None => Ok(0),
            Some(v) => key::u64_at(&v, 0).ok_or_else(|| corrupt(&k, "head is not 8 bytes")),
        }
    }

    fn messages(&self, channel: u64, from: u64, to: u64) -> Result<Vec<StoredMsg>, StoreError> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        // The run holding `from` starts at or below it: the last key of
        // the channel at or below `channel:from:MAX`.
        let lo = key::message(channel, 0);
        let start = match self
            .msgs
            .range(lo.to_vec()..=run_key(channel, from, u64::MAX).to_vec())
            .next_back()
        {
            Some(g) => {
                let k = g.key()?;
                k.to_vec()
            }
            None => key::message(channel, from).to_vec(),
        };
        for g in self
            .msgs
            .range(start..=run_key(channel, to, u64::MAX).to_vec())
        {
            let (k, v) = g.into_inner()?;
            if runs::channel_of(&k) != Some(channel) {
                continue;
            }
            let items = runs::items(&k, &v).map_err(|what| corrupt(&k, what))?;
            out.extend(
                items
                    .into_iter()
                    .filter(|m| (from..=to).contains(&m.msg_id))
                    .map(runs::Item::to_stored),
            );
        }
        Ok(out)
    }

    fn rooms(&self, uin: u64) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for g in self.meta.prefix(key::tagged(key::USER_ROOM, uin)) {
            let k = g.key()?;
            out.push(key::u64_at(&k, 9).ok_or_else(|| corrupt(&k, "room key length"))?);
        }
        Ok(out)
    }

    fn members(&self, room: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        let Some(first) = after.checked_add(1) else {
            return Ok(out);
        };
        let lo = key::pair(key::ROOM_MEMBER, room, first);
        let hi = key::pair(key::ROOM_MEMBER, room, u64::MAX);
        for g in self.meta.range(lo..=hi).take(limit) {
            let k = g.key()?;
            out.push(key::u64_at(&k, 9).ok_or_else(|| corrupt(&k, "member key length"))?);
        }
        Ok(out)
    }

    fn dedup(&self, uin: u64, device: u32) -> Result<Option<(u64, u64)>, StoreError> {
        let mut latest: Option<(u64, u64)> = None;
        for g in self.meta.prefix(key::dedup_prefix(uin, device)) {
            let (k, v) = g.into_inner()?;
            let rec = key::u64_at(&v, 0)
                .zip(key::u64_at(&v, 8))
                .ok_or_else(|| corrupt(&k, "dedup value length"))?;
            latest = latest.max(Some(rec));
        }
        Ok(latest)
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

/// Drops messages retention no longer allows during compactions.
struct RetentionFactory {
    retention: Retention,
    /// The `meta` keyspace (set once it is open), for channel heads. Only
    /// read here, so a panic in a compaction leaves nothing of ours
    /// half-changed: unwind-safe.
    heads: std::panic::AssertUnwindSafe<Heads>,
}

impl Factory for RetentionFactory {
    fn name(&self) -> &str {
        "millgate-retention"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Box::new(RetentionFilter {
            retention: self.retention,
            oldest_allowed: self.retention.oldest_allowed_ms(now),
            heads: self.heads.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            seen: HashMap::new(),
        })
    }
}

struct RetentionFilter {
    retention: Retention,
    oldest_allowed: u64,
    heads: Option<Keyspace>,
    /// Heads looked up during this compaction.
    seen: HashMap<u64, u64>,
}

impl RetentionFilter {
    fn head(&mut self, channel: u64) -> Option<u64> {
        if let Some(&h) = self.seen.get(&channel) {
            return Some(h);
        }
        let v = self.heads.as_ref()?.get(key::head(channel)).ok()??;
        let h = key::u64_at(&v, 0)?;
        self.seen.insert(channel, h);
        Some(h)
    }
}

impl CompactionFilter for RetentionFilter {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> lsm_tree::Result<Verdict> {
        let k = item.key();
        let v = item.value()?;
        // A record we cannot read is kept (a reader reports it).
        let (Some(channel), Ok(items)) = (runs::channel_of(k), runs::items(k, &v)) else {
            return Ok(Verdict::Keep);
        };
        // Without a head (cannot happen: it is written with the message)
        // only age applies.
        let first_kept = self
            .head(channel)
            .map_or(0, |head| self.retention.first_kept(head));
        let oldest_allowed = self.oldest_allowed;
        Ok(
            match runs::trim(k, &items, |m| {
                m.at_ms >= oldest_allowed && m.msg_id >= first_kept
            }) {
                Trim::Keep => Verdict::Keep,
                Trim::Remove => Verdict::Remove,
                Trim::Replace(value) => Verdict::ReplaceValue(value.into()),
            },
        )
    }
}
