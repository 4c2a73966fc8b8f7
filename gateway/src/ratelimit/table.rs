//! A table of rate-limit buckets kept outside the sessions, keyed by
//! (uin, device): one shard of the gateway's [`Shared`](super::Shared)
//! table.
//!
//! A [`Session`](crate::session::Session) holds only its SEND bucket (one
//! `u32`, read on every SEND); an idle connection stays 64 bytes. This
//! table holds the rest:
//!
//! - the JOIN, LEAVE and SYNC buckets of live sessions, and
//! - every bucket of a session that ended, so the next login of that
//!   (uin, device) starts from them instead of a full burst: a spammer
//!   gains nothing by reconnecting.
//!
//! An entry exists only while one of its buckets is not full: a full
//! bucket is what a missing entry means anyway. So an entry lives at most
//! `burst / per_sec` seconds after its last request (2 s for SEND's
//! defaults, 5 s for JOIN's), always shorter than an idle timeout, and
//! [`Table::sweep`] (once a second) drops it after that. Memory is bounded
//! by `capacity` entries (about 40 bytes each); when full, an arbitrary
//! entry is dropped, which only gives that (uin, device) a full bucket
//! early.

use std::collections::HashMap;

use super::{Bucket, Limits};

/// Bucket states of one (uin, device): TATs, indexed by [`Bucket`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    tats: [u32; 4],
}

impl Entry {
    fn fresh(now: u32) -> Entry {
        Entry { tats: [now; 4] }
    }

    fn all_full(&self, limits: &Limits, now: u32) -> bool {
        Bucket::ALL
            .iter()
            .all(|&b| limits.of(b).is_full(self.tats[b as usize], now))
    }
}

/// One shard's bucket table (see the module doc).
#[derive(Debug)]
pub struct Table {
    map: HashMap<(u64, u32), Entry>,
    capacity: usize,
}

impl Table {
    /// A table of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Table {
        Table {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Decides one JOIN, LEAVE or SYNC (`bucket`) of (uin, device) at `now`
    /// (ms, wrapping), updating its bucket when allowed.
    pub fn allow(
        &mut self,
        limits: &Limits,
        bucket: Bucket,
        uin: u64,
        device: u32,
        now: u32,
    ) -> bool {
        let limit = limits.of(bucket);
        if let Some(e) = self.map.get_mut(&(uin, device)) {
            return limit.allow(&mut e.tats[bucket as usize], now);
        }
        let mut e = Entry::fresh(now);
        let allowed = limit.allow(&mut e.tats[bucket as usize], now);
        self.insert(uin, device, e);
        allowed
    }

    /// The SEND bucket a new login of (uin, device) at `now` starts from:
    /// the one its last session left, or a full one.
    pub fn login(&mut self, uin: u64, device: u32, now: u32) -> u32 {
        match self.map.get_mut(&(uin, device)) {
            // The live session holds its SEND bucket from now on.
            Some(e) => std::mem::replace(&mut e.tats[Bucket::Send as usize], now),
            None => now,
        }
    }

    /// A logged-in session of (uin, device) ended at `now` with SEND bucket
    /// `send_tat`: kept for the next login unless it is full.
    pub fn closed(&mut self, limits: &Limits, uin: u64, device: u32, send_tat: u32, now: u32) {
        let full = limits.send.is_full(send_tat, now);
        match self.map.get_mut(&(uin, device)) {
            Some(e) => e.tats[Bucket::Send as usize] = send_tat,
            None if full => {}
            None => {
                let mut e = Entry::fresh(now);
                e.tats[Bucket::Send as usize] = send_tat;
                self.insert(uin, device, e);
            }
        }
    }

    /// Drops every entry whose buckets are all full again at `now`.
    pub fn sweep(&mut self, limits: &Limits, now: u32) {
        self.map.retain(|_, e| !e.all_full(limits, now));
    }

    fn insert(&mut self, uin: u64, device: u32, e: Entry) {
        if self.map.len() >= self.capacity
            && let Some(&victim) = self.map.keys().next()
        {
            self.map.remove(&victim);
        }
        self.map.insert((uin, device), e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimit;

    fn limits() -> Limits {
        Limits {
            send: RateLimit {
                per_sec: 10,
                burst: 3,
            },
            join: RateLimit {
                per_sec: 5,
                burst: 2,
            },
            leave: RateLimit {
                per_sec: 5,
                burst: 2,
            },
            sync: RateLimit {
                per_sec: 1,
                burst: 1,
            },
        }
    }

    #[test]
    fn join_leave_and_sync_each_have_their_own_bucket() {
        let (l, mut t) = (limits(), Table::new(16));
        assert!(t.allow(&l, Bucket::Join, 1, 1, 0));
        assert!(t.allow(&l, Bucket::Join, 1, 1, 0));
        assert!(!t.allow(&l, Bucket::Join, 1, 1, 0), "burst of 2");
        assert!(t.allow(&l, Bucket::Leave, 1, 1, 0), "LEAVE is separate");
        assert!(t.allow(&l, Bucket::Sync, 1, 1, 0));
        assert!(!t.allow(&l, Bucket::Sync, 1, 1, 999));
        assert!(t.allow(&l, Bucket::Sync, 1, 1, 1_000));
        assert!(t.allow(&l, Bucket::Join, 1, 2, 0), "another device");
        assert!(t.allow(&l, Bucket::Join, 1, 1, 200), "refills at 5/s");
        assert!(!t.allow(&l, Bucket::Join, 1, 1, 200));
    }

    #[test]
    fn a_send_bucket_survives_the_session_until_it_has_refilled() {
        let (l, mut t) = (limits(), Table::new(16));
        let mut tat = t.login(7, 1, 0);
        assert_eq!(tat, 0, "the first login starts full");
        for _ in 0..3 {
            assert!(l.send.allow(&mut tat, 0));
        }
        assert!(!l.send.allow(&mut tat, 0));
        t.closed(&l, 7, 1, tat, 10);
        // A reconnect 10 ms later gets the same empty bucket, not a burst.
        let mut again = t.login(7, 1, 20);
        assert!(!l.send.allow(&mut again, 20));
        assert!(l.send.allow(&mut again, 100), "it refills at the rate");
        t.closed(&l, 7, 1, again, 100);
        // Once refilled the entry is dropped, and a login starts full.
        t.sweep(&l, 400);
        assert!(t.is_empty());
        let mut late = t.login(7, 1, 400);
        assert_eq!(
            (0..10).take_while(|_| l.send.allow(&mut late, 400)).count(),
            3
        );
    }

    #[test]
    fn join_buckets_survive_a_reconnect_too() {
        let (l, mut t) = (limits(), Table::new(16));
        let _ = t.login(7, 1, 0);
        assert!(t.allow(&l, Bucket::Join, 7, 1, 0));
        assert!(t.allow(&l, Bucket::Join, 7, 1, 0));
        t.closed(&l, 7, 1, 0, 0);
        let _ = t.login(7, 1, 5);
        assert!(!t.allow(&l, Bucket::Join, 7, 1, 5));
    }

    #[test]
    fn a_full_bucket_at_close_costs_no_entry() {
        let (l, mut t) = (limits(), Table::new(16));
        let tat = t.login(7, 1, 0);
        t.closed(&l, 7, 1, tat, 5_000);
        assert!(t.is_empty());
    }

    #[test]
    fn the_sweep_keeps_only_entries_still_holding_something_back() {
        let (l, mut t) = (limits(), Table::new(16));
        assert!(t.allow(&l, Bucket::Join, 1, 1, 0));
        assert!(t.allow(&l, Bucket::Sync, 2, 1, 0));
        t.sweep(&l, 199);
        assert_eq!(t.len(), 2);
        t.sweep(&l, 200);
        assert_eq!(t.len(), 1, "JOIN's 200 ms token is back");
        t.sweep(&l, 1_000);
        assert!(t.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let (l, mut t) = (limits(), Table::new(4));
        for uin in 0..100 {
            assert!(t.allow(&l, Bucket::Join, uin, 1, 0));
        }
        assert_eq!(t.len(), 4);
    }
}
