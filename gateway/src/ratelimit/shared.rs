//! The gateway's rate-limit buckets, shared by all its workers: a fixed
//! number of [`Table`] shards, each behind its own mutex, picked by a hash
//! of (uin, device).
//!
//! A reconnect lands on whichever worker the kernel picks (SO_REUSEPORT),
//! so per-worker tables would give a spammer up to one burst per worker.
//! One table for the process keeps rule 10 per (uin, device) on the
//! gateway. It stays off the hot path: a SEND reads only the bucket in its
//! session; the shared table is touched at LOGIN, at a logged-in
//! session's close, by JOIN, LEAVE and SYNC (themselves rate limited) and
//! by each worker's once-a-second sweep of its share of the shards. With
//! 64 shards two workers rarely meet on one lock, and each hold is one
//! hash-map operation.
//!
//! Every worker reads its clock from the same base instant (the server's
//! start), so the `u32` millisecond times in the buckets mean the same on
//! every worker.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Bucket, Limits, Table};

/// Shards of the shared table: a power of two.
const SHARDS: usize = 64;

/// The process-wide bucket table (see the module doc).
#[derive(Debug)]
pub struct Shared {
    shards: Box<[Mutex<Table>]>,
}

impl Shared {
    /// A table of about `capacity` entries in all (each shard holds its
    /// share, at least one).
    pub fn new(capacity: usize) -> Shared {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Shared {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Table::new(per_shard)))
                .collect(),
        }
    }

    fn shard(&self, uin: u64, device: u32) -> MutexGuard<'_, Table> {
        // Fibonacci hashing of both halves of the key; the top bits pick.
        let h = (uin ^ u64::from(device).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (h >> (64 - SHARDS.trailing_zeros())) as usize;
        self.lock(i)
    }

    /// Entries held in all shards.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Table> {
        // A worker that panicked while holding a shard left a table of
        // plain integers that is still consistent: keep using it.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// See [`Table::allow`].
    pub fn allow(&self, limits: &Limits, bucket: Bucket, uin: u64, device: u32, now: u32) -> bool {
        self.shard(uin, device)
            .allow(limits, bucket, uin, device, now)
    }

    /// See [`Table::login`].
    pub fn login(&self, uin: u64, device: u32, now: u32) -> u32 {
        self.shard(uin, device).login(uin, device, now)
    }

    /// See [`Table::closed`].
    pub fn closed(&self, limits: &Limits, uin: u64, device: u32, send_tat: u32, now: u32) {
        self.shard(uin, device)
            .closed(limits, uin, device, send_tat, now)
    }

    /// Sweeps part `part` of `parts` (a worker's index of the worker
    /// count): the shards `i` with `i % parts == part`, so that the
    /// workers' sweeps together cover every shard once.
    pub fn sweep(&self, limits: &Limits, now: u32, part: usize, parts: usize) {
        let parts = parts.max(1);
        for i in (part % parts..SHARDS).step_by(parts) {
            self.lock(i).sweep(limits, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimit;

    fn limits() -> Limits {
        let one = RateLimit {
            per_sec: 1,
            burst: 2,
        };
        Limits {
            send: one,
            join: one,
            leave: one,
            sync: one,
        }
    }

    #[test]
    fn a_bucket_left_by_one_worker_is_taken_over_by_another() {
        let (l, t) = (limits(), std::sync::Arc::new(Shared::new(1024)));
        let mut tat = t.login(7, 1, 0);
        assert!(l.send.allow(&mut tat, 0) && l.send.allow(&mut tat, 0));
        // The session ends on one worker's thread, the next login is on
        // another's.
        let left = t.clone();
        std::thread::spawn(move || left.closed(&limits(), 7, 1, tat, 10))
            .join()
            .unwrap();
        let other = t.clone();
        let mut again = std::thread::spawn(move || other.login(7, 1, 20))
            .join()
            .unwrap();
        assert!(!l.send.allow(&mut again, 20), "no fresh burst");
    }

    #[test]
    fn the_workers_sweeps_together_cover_every_shard() {
        let (l, t) = (limits(), Shared::new(1 << 16));
        for uin in 0..1_000 {
            assert!(t.allow(&l, Bucket::Join, uin, 1, 0));
        }
        assert_eq!(t.len(), 1_000);
        t.sweep(&l, 5_000, 0, 3);
        t.sweep(&l, 5_000, 1, 3);
        assert!(!t.is_empty(), "two of three parts swept");
        t.sweep(&l, 5_000, 2, 3);
        assert!(t.is_empty());
    }

    #[test]
    fn the_capacity_bounds_the_whole_table() {
        let (l, t) = (limits(), Shared::new(128));
        for uin in 0..100_000 {
            assert!(t.allow(&l, Bucket::Join, uin, 1, 0));
        }
        assert!(t.len() <= 128, "{} entries", t.len());
    }
}
