//! When a written batch counts as durable (`--fsync`), and the thread that
//! makes it so: group commit over every shard.
//!
//! Each shard writes its turn's batch to the store (it reaches the OS:
//! safe from a process crash) and takes a *ticket*, the count of batches
//! written so far. The sync thread repeatedly reads that count, calls
//! [`Store::sync`] (one fdatasync of the one journal, covering every batch
//! written before it started, whichever shard wrote it) and publishes the
//! count as synced.
//!
//! - `batch` (default): a turn's outputs are released as soon as its batch
//!   is written; the sync thread runs every `--fsync-interval-ms` (100)
//!   when anything was written. A kill -9 or a logic crash loses nothing
//!   acknowledged; a power loss or kernel crash can lose up to the last
//!   interval of acknowledged messages.
//! - `always`: a turn's outputs wait for a sync that covers its ticket;
//!   the shard goes on with its next turns meanwhile and releases outputs
//!   in turn order as syncs complete. Nothing acknowledged is ever lost,
//!   at the price of latency (one fdatasync, about 4 ms on this disk) and,
//!   with a bounded window of requests in flight, of throughput: a sender
//!   with W SENDs outstanding gets at most W per sync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::store::Store;
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

/// Tickets and the sync thread's state, shared by the shards.
#[derive(Debug)]
pub struct Durability {
    mode: FsyncMode,
    store: Arc<dyn Store>,
    written: AtomicU64,
    synced: AtomicU64,
    /// Shards waiting for a sync (always mode), by index.
    waiting: Mutex<Vec<bool>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Durability {
    /// State for `shards` shards writing to `store`.
    pub fn new(mode: FsyncMode, store: Arc<dyn Store>, shards: usize) -> Arc<Durability> {
        Arc::new(Durability {
            mode,
            store,
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            waiting: Mutex::new(vec![false; shards]),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    /// The mode in force.
    pub fn mode(&self) -> FsyncMode {
        self.mode
    }

    /// The store the shards write to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Counts one written batch; its ticket.
    pub fn wrote(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The highest ticket a completed sync covers.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// Shard `shard` waits for a sync covering its tickets: it will get
    /// `Input::Synced` on its queue.
    pub fn request(&self, shard: usize) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w[shard] = true;
        self.wake.notify_one();
    }

    /// Stops the sync thread after one last sync.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_one();
    }

    /// Starts the sync thread; it tells waiting shards through `shards`.
    pub fn spawn(
        self: &Arc<Self>,
        interval: Duration,
        shards: Vec<Sender<Input>>,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || me.run(interval, &shards))
    }

    fn run(&self, interval: Duration, shards: &[Sender<Input>]) {
        loop {
            let notify: Vec<usize> = {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                let idle = |w: &Vec<bool>| {
                    !self.stop.load(Ordering::SeqCst)
                        && match self.mode {
                            FsyncMode::Always => !w.iter().any(|&x| x),
                            FsyncMode::Batch => true,
                        }
                };
                if idle(&w) {
                    w = match self.mode {
                        FsyncMode::Always => self
                            .wake
                            .wait_while(w, |w| idle(w))
                            .unwrap_or_else(|e| e.into_inner()),
                        FsyncMode::Batch => {
                            self.wake
                                .wait_timeout(w, interval)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                }
                let who = (0..w.len()).filter(|&i| w[i]).collect();
                w.iter_mut().for_each(|x| *x = false);
                who
            };
            let target = self.written.load(Ordering::SeqCst);
            if target > self.synced() {
                if let Err(e) = self.store.sync() {
                    crate::worker::fatal(&format!("fdatasync failed: {e}"));
                }
                self.synced.store(target, Ordering::SeqCst);
            }
            for i in notify {
                let _ = shards[i].send(Input::Synced(target));
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}
