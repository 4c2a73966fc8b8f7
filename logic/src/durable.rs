//! When a written batch counts as durable (`--fsync`), and the two
//! threads that make it so: the *writer* (applies every shard's batches to
//! the store, so no shard ever waits on a store commit) and the *sync*
//! thread (group commit over every shard).
//!
//! Each shard ends a turn by submitting its batch ([`Durability::submit`])
//! and takes a *ticket* (the count of batches submitted so far, over all
//! shards). The writer takes everything queued, merges it into one store
//! write (one commit, fewer and longer message runs), applies it (it
//! reaches the OS: safe from a process crash) and publishes the highest
//! ticket it covers as *written*. The sync thread calls [`Store::sync`]
//! (one fdatasync of the one journal, covering every batch written before
//! it started) and publishes the written count it saw as *synced*.
//!
//! A shard holds each turn's outputs until its ticket is *released* and
//! goes on with new turns meanwhile, releasing outputs in turn order:
//!
//! - `batch` (default): released when written; the sync thread runs every
//!   `--fsync-interval-ms` (100) when anything was written. A kill -9 or a
//!   logic crash loses nothing acknowledged; a power loss or kernel crash
//!   can lose up to the last interval of acknowledged messages.
//! - `always`: released when synced. Nothing acknowledged is ever lost, at
//!   the price of latency (one fdatasync, 0.2-4 ms on this disk) and, with
//!   a bounded window of requests in flight, of throughput: a sender with
//!   W SENDs outstanding gets at most W per sync.
//!
//! Why a writer thread: a fjall commit sometimes blocks for milliseconds
//! (its flush worker holds the journal lock through an `fsync`); on the
//! shard thread that stopped every channel and user of the shard. Now
//! the shard keeps reading and answering what does not depend on the
//! stalled write (nothing is released early: its outputs wait).
//!
//! Reads: a shard reads the store to load state it evicted; such a read
//! must see every batch the shard submitted, so the shard's store handle
//! is a [`ReadBarrier`] that first waits until the shard's last ticket is
//! written (rare: loads, not the message path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::store::{Batch, IDLE, Store, StoreError, StoredMsg};
use crate::worker::Input;

/// When a SEND is acknowledged (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// After the write reached the OS; fdatasync in the background.
    Batch,
    /// After fdatasync (group commit).
    Always,
}

/// Batches waiting for the writer.
#[derive(Debug, Default)]
struct Queue {
    /// Tickets handed out so far.
    tickets: u64,
    /// (ticket, shard, batch), in ticket order.
    batches: Vec<(u64, usize, Batch)>,
    stop: bool,
}

/// Tickets, the queue and the sync state, shared by the shards.
#[derive(Debug)]
pub struct Durability {
    mode: FsyncMode,
    store: Arc<dyn Store>,
    queue: Mutex<Queue>,
    queued: Condvar,
    /// Each shard's last submitted ticket.
    submitted: Vec<AtomicU64>,
    /// The highest ticket applied to the store.
    written: AtomicU64,
    /// Signalled (with `written_lock`) when `written` grows.
    written_lock: Mutex<()>,
    written_cv: Condvar,
    /// The highest ticket a completed sync covers.
    synced: AtomicU64,
    /// Shards waiting for a sync (always mode), by index; and stop.
    waiting: Mutex<(Vec<bool>, bool)>,
    wake: Condvar,
}

/// The writer and sync threads, for [`Durability::shutdown`].
#[derive(Debug)]
pub struct Threads {
    writer: JoinHandle<()>,
    sync: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Durability {
    /// State for `shards` shards writing to `store`.
    pub fn new(mode: FsyncMode, store: Arc<dyn Store>, shards: usize) -> Arc<Durability> {
        Arc::new(Durability {
            mode,
            store,
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            submitted: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            written: AtomicU64::new(0),
            written_lock: Mutex::new(()),
            written_cv: Condvar::new(),
            synced: AtomicU64::new(0),
            waiting: Mutex::new((vec![false; shards], false)),
            wake: Condvar::new(),
        })
    }

    /// The mode in force.
    pub fn mode(&self) -> FsyncMode {
        self.mode
    }

    /// The store the writer writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Queues shard `shard`'s batch for the writer; its ticket.
    pub fn submit(&self, shard: usize, batch: Batch) -> u64 {
        let mut q = lock(&self.queue);
        q.tickets += 1;
        let t = q.tickets;
        q.batches.push((t, shard, batch));
        self.submitted[shard].store(t, Ordering::SeqCst);
        self.queued.notify_one();
        t
    }

    /// The highest ticket applied to the store.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// The highest ticket a completed sync covers.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// The highest ticket whose outputs may be released (see the module
    /// doc).
    pub fn released(&self) -> u64 {
        match self.mode {
            FsyncMode::Batch => self.written(),
            FsyncMode::Always => self.synced(),
        }
    }

    /// Waits until every batch shard `shard` submitted is written.
    pub fn wait_written_for(&self, shard: usize) {
        let want = self.submitted[shard].load(Ordering::SeqCst);
        if self.written() >= want {
            return;
        }
        let g = lock(&self.written_lock);
        let _g = self
            .written_cv
            .wait_while(g, |_| self.written() < want)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Starts the writer and the sync thread; they tell shards through
    /// `shards` when their tickets are released.
    pub fn spawn(
        self: &Arc<Self>,
        interval: Duration,
        shards: Vec<Sender<Input>>,
    ) -> std::io::Result<Threads> {
        let me = self.clone();
        let peers = shards.clone();
        let writer = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || me.write_loop(&peers))?;
        let me = self.clone();
        let sync = std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || me.sync_loop(interval, &shards))?;
        Ok(Threads { writer, sync })
    }

    /// Writes what is queued, then syncs once more and stops both
    /// threads. Call after the shards stopped.
    pub fn shutdown(&self, threads: Threads) -> std::thread::Result<()> {
        lock(&self.queue).stop = true;
        self.queued.notify_one();
        threads.writer.join()?;
        lock(&self.waiting).1 = true;
        self.wake.notify_one();
        threads.sync.join()
    }

    fn write_loop(&self, shards: &[Sender<Input>]) {
        let mut merged = Batch::default();
        let mut taken = Vec::new();
        let mut who = vec![false; shards.len()];
        loop {
            let (stop, timed_out) = {
                let q = lock(&self.queue);
                let (mut q, t) = self
                    .queued
                    .wait_timeout_while(q, IDLE, |q| q.batches.is_empty() && !q.stop)
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::swap(&mut taken, &mut q.batches);
                (q.stop, t.timed_out())
            };
            if timed_out && let Err(e) = self.store.idle() {
                crate::worker::fatal(&format!("store maintenance failed: {e}"));
            }
            let Some(&(last, _, _)) = taken.last() else {
                if stop {
                    return;
                }
                continue;
            };
            for (_, shard, b) in taken.drain(..) {
                merged.extend(b);
                who[shard] = true;
            }
            if let Err(e) = self.store.write(&merged) {
                crate::worker::fatal(&format!("store write failed: {e}"));
            }
            merged.clear();
            self.written.store(last, Ordering::SeqCst);
            {
                let _g = lock(&self.written_lock);
                self.written_cv.notify_all();
            }
            match self.mode {
                FsyncMode::Batch => {
                    for (i, w) in who.iter_mut().enumerate() {
                        if std::mem::take(w) {
                            let _ = shards[i].send(Input::Written(last));
                        }
                    }
                }
                FsyncMode::Always => {
                    let mut g = lock(&self.waiting);
                    for (i, w) in who.iter_mut().enumerate() {
                        g.0[i] |= std::mem::take(w);
                    }
                    self.wake.notify_one();
                }
            }
        }
    }

    fn sync_loop(&self, interval: Duration, shards: &[Sender<Input>]) {
        loop {
            let (notify, stop): (Vec<usize>, bool) = {
                let mut g = lock(&self.waiting);
                let idle = |g: &(Vec<bool>, bool)| {
                    !g.1 && match self.mode {
                        FsyncMode::Always => !g.0.iter().any(|&x| x),
                        FsyncMode::Batch => true,
                    }
                };
                if idle(&g) {
                    g = match self.mode {
                        FsyncMode::Always => self
                            .wake
                            .wait_while(g, |g| idle(g))
                            .unwrap_or_else(|e| e.into_inner()),
                        FsyncMode::Batch => {
                            self.wake
                                .wait_timeout(g, interval)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                }
                let who = (0..g.0.len()).filter(|&i| g.0[i]).collect();
                g.0.iter_mut().for_each(|x| *x = false);
                (who, g.1)
            };
            let target = self.written();
            if target > self.synced() {
                if let Err(e) = self.store.sync() {
                    crate::worker::fatal(&format!("fdatasync failed: {e}"));
                }
                self.synced.store(target, Ordering::SeqCst);
            }
            for i in notify {
                let _ = shards[i].send(Input::Synced(target));
            }
            if stop {
                return;
            }
        }
    }
}

/// Shard `shard`'s view of the store: every read first waits until the
/// shard's submitted batches are written, so a load after an eviction
/// sees everything the shard stored. Writes go through the writer, not
/// here ([`Store::write`] applies directly, for tools).
#[derive(Debug)]
pub struct ReadBarrier {
    pub durability: Arc<Durability>,
    pub shard: usize,
}

impl ReadBarrier {
    fn store(&self) -> &dyn Store {
        self.durability.wait_written_for(self.shard);
        self.durability.store().as_ref()
    }
}

impl Store for ReadBarrier {
    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        self.store().write(batch)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.store().sync()
    }

    fn durable(&self) -> bool {
        self.durability.store().durable()
    }

    fn idle(&self) -> Result<(), StoreError> {
        self.durability.store().idle()
    }

    fn head(&self, channel: u64) -> Result<u64, StoreError> {
        self.store().head(channel)
    }

    fn messages(&self, channel: u64, from: u64, to: u64) -> Result<Vec<StoredMsg>, StoreError> {
        self.store().messages(channel, from, to)
    }

    fn rooms(&self, uin: u64) -> Result<Vec<u64>, StoreError> {
        self.store().rooms(uin)
    }

    fn members(&self, room: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        self.store().members(room, after, limit)
    }

    fn dedup(&self, uin: u64, device: u32) -> Result<Option<(u64, u64)>, StoreError> {
        self.store().dedup(uin, device)
    }

    fn disk_bytes(&self) -> u64 {
        self.durability.store().disk_bytes()
    }
}

#[cfg(test)]
mod tests;
