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
//! Retention on disk: the channel's shard deletes the message that falls
//! out of the count window in the same batch as the new one (a point
//! delete: no scan, no stall), and a compaction filter drops messages past
//! the maximum age while fjall compacts in the background.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use lsm_tree::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};

use super::check::{JournalProblem, Repaired, check_journals};
use super::{Batch, DedupRecord, Op, Store, StoreError, StoredMsg, key};
use crate::channel::Retention;

/// Block cache shared by both keyspaces. Small on purpose: reads are
/// loads of evicted state, not the message path.
const CACHE_BYTES: u64 = 16 << 20;
/// Journals kept before fjall flushes memtables (its minimum): bounds the
/// replay at restart.
const MAX_JOURNALING_BYTES: u64 = 64 << 20;
/// Memtable sizes: bound the memory fjall holds for recent writes.
const MSGS_MEMTABLE_BYTES: u64 = 16 << 20;
const META_MEMTABLE_BYTES: u64 = 8 << 20;

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
    /// The journal the last sync used, kept open.
    sync_file: Mutex<Option<(PathBuf, File)>>,
    /// Held for the life of the store: the directory's lock.
    _lock: File,
    /// Torn tails cut off when opening.
    pub repaired: Vec<Repaired>,
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
        let max_age_ms = retention.max_age_ms;
        let assign: FilterAssigner = Arc::new(move |name: &str| {
            (name == "msgs").then(|| Arc::new(AgeFilterFactory { max_age_ms }) as Arc<dyn Factory>)
        });
        let engine = |source| OpenError::Engine {
            path: db_dir.clone(),
            source,
        };
        let db = Database::builder(&db_dir)
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
        Ok(FjallStore {
            db,
            msgs,
            meta,
            dir: db_dir,
            sync_file: Mutex::new(None),
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
        for op in &batch.ops {
            match op {
                Op::Message {
                    channel,
                    msg_id,
                    at_ms,
                    frame,
                } => {
                    let mut v = Vec::with_capacity(8 + frame.len());
                    v.extend_from_slice(&at_ms.to_be_bytes());
                    v.extend_from_slice(frame);
                    b.insert(&self.msgs, key::message(*channel, *msg_id), v);
                }
                Op::DropMessage { channel, msg_id } => {
                    b.remove(&self.msgs, key::message(*channel, *msg_id));
                }
                Op::Head { channel, newest } => {
                    b.insert(&self.meta, key::head(*channel), newest.to_be_bytes());
                }
                Op::Dedup {
                    uin,
                    device,
                    cmid,
                    msg_id,
                } => {
                    b.insert(
                        &self.meta,
                        key::dedup(*uin, *device, *cmid),
                        msg_id.to_be_bytes(),
                    );
                }
                Op::DropDedup { uin, device, cmid } => {
                    b.remove(&self.meta, key::dedup(*uin, *device, *cmid));
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
        let range = key::message(channel, from)..=key::message(channel, to);
        for g in self.msgs.range(range) {
            let (k, v) = g.into_inner()?;
            let msg_id = key::u64_at(&k, 8).ok_or_else(|| corrupt(&k, "message key length"))?;
            let at_ms = key::u64_at(&v, 0).ok_or_else(|| corrupt(&k, "message value length"))?;
            out.push(StoredMsg {
                msg_id,
                at_ms,
                frame: Bytes::copy_from_slice(&v[8..]),
            });
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

    fn dedup(&self, uin: u64, device: u32) -> Result<DedupRecord, StoreError> {
        let mut rec = DedupRecord::default();
        for g in self.meta.prefix(key::dedup_prefix(uin, device)).rev() {
            let (k, v) = g.into_inner()?;
            let cmid = key::u64_at(&k, 13).ok_or_else(|| corrupt(&k, "dedup key length"))?;
            match rec.latest {
                None => {
                    let msg_id =
                        key::u64_at(&v, 0).ok_or_else(|| corrupt(&k, "dedup value length"))?;
                    rec.latest = Some((cmid, msg_id));
                }
                Some(_) => rec.stale.push(cmid),
            }
        }
        Ok(rec)
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

/// Drops messages older than the maximum age during compactions.
struct AgeFilterFactory {
    max_age_ms: u64,
}

impl Factory for AgeFilterFactory {
    fn name(&self) -> &str {
        "millgate-message-age"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Box::new(AgeFilter {
            oldest_allowed: now.saturating_sub(self.max_age_ms),
        })
    }
}

struct AgeFilter {
    oldest_allowed: u64,
}

impl CompactionFilter for AgeFilter {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> lsm_tree::Result<Verdict> {
        let v = item.value()?;
        Ok(match key::u64_at(&v, 0) {
            Some(at_ms) if at_ms < self.oldest_allowed => Verdict::Remove,
            _ => Verdict::Keep,
        })
    }
}
