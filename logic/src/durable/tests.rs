//! The writer and sync threads against a store whose writes can be held
//! back: a shard's submit never waits for the store, outputs are released
//! only once written (batch) or synced (always), a shard's reads wait for
//! its own pending writes, and shutdown writes what is queued.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, unbounded};

use super::*;
use crate::store::{MemStore, Op};

const WAIT: Duration = Duration::from_secs(10);

/// A [`MemStore`] whose writes wait until the gate opens; each write
/// announces itself on `entered` first.
#[derive(Debug)]
struct Gated {
    inner: MemStore,
    open: Mutex<bool>,
    opened: Condvar,
    entered: Mutex<mpsc::Sender<()>>,
    idles: Mutex<mpsc::Sender<()>>,
}

impl Gated {
    fn new() -> (Arc<Gated>, mpsc::Receiver<()>) {
        let (g, entered, _) = Gated::with_idles();
        (g, entered)
    }

    /// Also reports each [`Store::idle`] call.
    fn with_idles() -> (Arc<Gated>, mpsc::Receiver<()>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let (itx, irx) = mpsc::channel();
        let g = Gated {
            inner: MemStore::default(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            entered: Mutex::new(tx),
            idles: Mutex::new(itx),
        };
        (Arc::new(g), rx, irx)
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Store for Gated {
    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let _ = self.entered.lock().unwrap().send(());
        let g = self.open.lock().unwrap();
        let _g = self.opened.wait_while(g, |open| !*open).unwrap();
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn idle(&self) -> Result<(), StoreError> {
        let _ = self.idles.lock().unwrap().send(());
        Ok(())
    }
    fn durable(&self) -> bool {
        false
    }
    fn head(&self, channel: u64) -> Result<u64, StoreError> {
        self.inner.head(channel)
    }
    fn messages(&self, channel: u64, from: u64, to: u64) -> Result<Vec<StoredMsg>, StoreError> {
        self.inner.messages(channel, from, to)
    }
    fn rooms(&self, uin: u64) -> Result<Vec<u64>, StoreError> {
        self.inner.rooms(uin)
    }
    fn members(&self, room: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        self.inner.members(room, after, limit)
    }
    fn dedup(&self, uin: u64, device: u32) -> Result<Option<(u64, u64)>, StoreError> {
        self.inner.dedup(uin, device)
    }
    fn disk_bytes(&self) -> u64 {
        0
    }
}

fn head(channel: u64, newest: u64) -> Batch {
    let mut b = Batch::default();
    b.push(Op::Head { channel, newest });
    b
}

fn start(mode: FsyncMode, store: Arc<dyn Store>) -> (Arc<Durability>, Threads, Receiver<Input>) {
    let d = Durability::new(mode, store, 1);
    let (tx, rx) = unbounded();
    let t = d.spawn(Duration::from_millis(5), vec![tx]).unwrap();
    (d, t, rx)
}

/// Submits from another thread; the ticket, or a failure if it blocks.
fn submit(d: &Arc<Durability>, b: Batch) -> u64 {
    let (tx, rx) = mpsc::channel();
    let d = d.clone();
    std::thread::spawn(move || tx.send(d.submit(0, b)));
    rx.recv_timeout(WAIT)
        .expect("submit returned without the store")
}

#[test]
fn a_stalled_store_write_does_not_block_the_shard_and_holds_its_release() {
    let (store, entered) = Gated::new();
    let (d, threads, rx) = start(FsyncMode::Batch, store.clone());
    assert_eq!(submit(&d, head(1, 5)), 1);
    entered
        .recv_timeout(WAIT)
        .expect("the writer took the batch");
    // The write is stalled: a second turn is accepted meanwhile.
    assert_eq!(submit(&d, head(1, 6)), 2);
    assert_eq!(d.released(), 0, "nothing released before the write");
    store.open();
    let mut seen = 0;
    while seen < 2 {
        match rx.recv_timeout(WAIT).expect("told of the write") {
            Input::Written(t) => seen = seen.max(t),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(d.released(), 2);
    assert_eq!(store.head(1).unwrap(), 6);
    d.shutdown(threads).unwrap();
}

#[test]
fn a_shards_read_waits_for_its_own_pending_writes() {
    let (store, entered) = Gated::new();
    let (d, threads, _rx) = start(FsyncMode::Batch, store.clone());
    submit(&d, head(3, 9));
    entered
        .recv_timeout(WAIT)
        .expect("the writer took the batch");
    let reader = ReadBarrier {
        durability: d.clone(),
        shard: 0,
    };
    let (tx, got) = mpsc::channel();
    std::thread::spawn(move || tx.send(reader.head(3).unwrap()));
    assert!(
        got.recv_timeout(Duration::from_millis(200)).is_err(),
        "the read waits while the write is pending (it would read 0)"
    );
    store.open();
    assert_eq!(got.recv_timeout(WAIT).expect("the read returns"), 9);
    d.shutdown(threads).unwrap();
}

#[test]
fn always_releases_only_after_a_sync() {
    let store = Arc::new(MemStore::default());
    let (d, threads, rx) = start(FsyncMode::Always, store);
    let t = submit(&d, head(2, 1));
    loop {
        match rx.recv_timeout(WAIT).expect("told of the sync") {
            Input::Synced(s) if s >= t => break,
            Input::Synced(_) => {}
            other => panic!("always mode tells of syncs only, got {other:?}"),
        }
    }
    assert!(d.synced() >= t && d.released() >= t);
    d.shutdown(threads).unwrap();
}

#[test]
fn shutdown_writes_what_is_queued() {
    let store = Arc::new(MemStore::default());
    let (d, threads, _rx) = start(FsyncMode::Batch, store.clone());
    for n in 1..=50 {
        d.submit(0, head(4, n));
    }
    d.shutdown(threads).unwrap();
    assert_eq!(store.head(4).unwrap(), 50);
    assert_eq!(d.written(), 50);
}

#[test]
fn the_store_hears_when_writes_have_stopped() {
    let (store, _entered, idles) = Gated::with_idles();
    store.open();
    let (d, threads, rx) = start(FsyncMode::Batch, store.clone());
    submit(&d, head(5, 1));
    assert!(matches!(rx.recv_timeout(WAIT), Ok(Input::Written(1))));
    idles
        .recv_timeout(IDLE * 5)
        .expect("idle called after IDLE without writes");
    d.shutdown(threads).unwrap();
}
