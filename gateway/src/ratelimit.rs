//! The per-session rate limits, sans-io: SEND (PROTOCOL.md rule 10) and,
//! the same way, JOIN, LEAVE and SYNC (see [`Limits`]). The gateway-wide
//! [`Shared`] table (shards of [`Table`]) keeps what does not fit in every
//! session: the JOIN, LEAVE and SYNC buckets, and every bucket of a
//! session that ended, so a reconnect, onto any worker, does not refill
//! them.
//!
//! A token bucket expressed as GCRA (the generic cell rate algorithm), so a
//! session's whole limiter state is one `u32`: the theoretical arrival time
//! (TAT) in wrapping milliseconds. With emission interval `T = 1000 / rate`
//! ms and tolerance `tau = (burst - 1) × T`, a SEND at `now` is allowed when
//! `TAT - now <= tau`, and then `TAT = max(TAT, now) + T`. A fresh limiter
//! has `TAT = now`: the bucket starts full (`burst` SENDs at once).
//!
//! Times are `u32` milliseconds that wrap every 49.7 days; differences are
//! taken with wrapping arithmetic. A live TAT is never more than `tau + T`
//! ahead of now, so a larger forward difference can only be a TAT gone
//! stale across a wrap, and is treated as "bucket full". The rate is applied
//! with 1 ms resolution (`T` rounds down, so a rate that does not divide
//! 1,000 is rounded up slightly).

use serde::{Deserialize, Serialize};

/// One token bucket's settings (SEND's defaults shown; the other kinds'
/// are on [`RateLimit::JOIN`], [`RateLimit::LEAVE`], [`RateLimit::SYNC`]).
/// A TOML table that gives only one field takes the other from SEND's
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per session. Default 20.
    pub per_sec: u32,
    /// Burst size; the bucket starts full. Default 40.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: 20,
            burst: 40,
        }
    }
}

/// Every per-session limit. Each bucket starts full at the first LOGIN
/// of a (uin, device) on the gateway; one its last session left empty is
/// taken over by the next login, on whichever worker (see [`Shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub send: RateLimit,
    pub join: RateLimit,
    pub leave: RateLimit,
    pub sync: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            send: RateLimit::default(),
            join: RateLimit::JOIN,
            leave: RateLimit::LEAVE,
            sync: RateLimit::SYNC,
        }
    }
}

impl Limits {
    /// The limit of `bucket`.
    pub fn of(&self, bucket: Bucket) -> &RateLimit {
        match bucket {
            Bucket::Send => &self.send,
            Bucket::Join => &self.join,
            Bucket::Leave => &self.leave,
            Bucket::Sync => &self.sync,
        }
    }
}

/// Which request kind a bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Send = 0,
    Join = 1,
    Leave = 2,
    Sync = 3,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Send, Bucket::Join, Bucket::Leave, Bucket::Sync];
}

impl RateLimit {
    /// JOIN default: 10 per second, bursts of 50 (a client joining a few
    /// dozen rooms at once is not limited).
    pub const JOIN: RateLimit = RateLimit {
        per_sec: 10,
        burst: 50,
    };
    /// LEAVE default: as JOIN.
    pub const LEAVE: RateLimit = RateLimit::JOIN;
    /// SYNC default: 2 per second, bursts of 10 (one SYNC per reconnect is
    /// the normal use; each may PUSH up to the retention of every room).
    pub const SYNC: RateLimit = RateLimit {
        per_sec: 2,
        burst: 10,
    };

    fn interval_ms(&self) -> u32 {
        (1_000 / self.per_sec.max(1)).max(1)
    }

    fn tolerance_ms(&self) -> u32 {
        self.burst
            .max(1)
            .saturating_sub(1)
            .saturating_mul(self.interval_ms())
    }

    /// Decides one SEND at `now` against `tat`, updating it when allowed.
    pub fn allow(&self, tat: &mut u32, now: u32) -> bool {
        let t = self.interval_ms();
        let tau = self.tolerance_ms();
        let ahead = tat.wrapping_sub(now);
        let ahead = if ahead > tau.saturating_add(t) {
            0
        } else {
            ahead
        };
        if ahead > tau {
            return false;
        }
        *tat = now.wrapping_add(ahead).wrapping_add(t);
        true
    }

    /// True when `tat` no longer holds anything back at `now`: the bucket
    /// is full again, exactly as a fresh one (`tat == now`) would be.
    pub fn is_full(&self, tat: u32, now: u32) -> bool {
        let ahead = tat.wrapping_sub(now);
        ahead == 0 || ahead > self.tolerance_ms().saturating_add(self.interval_ms())
    }
}

mod shared;
mod table;
pub use shared::Shared;
pub use table::Table;

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_in_burst(rl: &RateLimit, tat: &mut u32, now: u32) -> u32 {
        (0..1_000).take_while(|_| rl.allow(tat, now)).count() as u32
    }

    #[test]
    fn starts_full_and_allows_exactly_the_burst() {
        let rl = RateLimit::default();
        let mut tat = 5_000;
        assert_eq!(allowed_in_burst(&rl, &mut tat, 5_000), 40);
    }

    #[test]
    fn refills_at_the_rate() {
        let rl = RateLimit::default();
        let mut tat = 0;
        assert_eq!(allowed_in_burst(&rl, &mut tat, 0), 40);
        assert!(!rl.allow(&mut tat, 49));
        assert!(rl.allow(&mut tat, 50), "one token per 50 ms at 20/s");
        assert!(!rl.allow(&mut tat, 50));
        // A second's rest refills 20.
        assert_eq!(allowed_in_burst(&rl, &mut tat, 1_050), 20);
    }

    #[test]
    fn a_long_idle_refills_to_the_burst_not_beyond() {
        let rl = RateLimit::default();
        let mut tat = 0;
        assert_eq!(allowed_in_burst(&rl, &mut tat, 0), 40);
        assert_eq!(allowed_in_burst(&rl, &mut tat, 3_600_000), 40);
    }

    #[test]
    fn survives_the_clock_wrap() {
        let rl = RateLimit::default();
        let start = u32::MAX - 100;
        let mut tat = start;
        assert_eq!(allowed_in_burst(&rl, &mut tat, start), 40);
        assert!(!rl.allow(&mut tat, start.wrapping_add(49)));
        assert!(rl.allow(&mut tat, start.wrapping_add(50)));
        // Stale TAT from long before: bucket is full.
        let mut stale = 1_000;
        assert_eq!(allowed_in_burst(&rl, &mut stale, 1_000 + (3 << 30)), 40);
    }

    #[test]
    fn a_bucket_is_full_again_once_its_tat_has_passed() {
        let rl = RateLimit::default();
        let mut tat = 0;
        assert!(rl.is_full(tat, 0), "fresh");
        assert!(rl.allow(&mut tat, 0));
        assert!(!rl.is_full(tat, 0));
        assert!(!rl.is_full(tat, 49));
        assert!(rl.is_full(tat, 50));
        assert!(rl.is_full(tat, 50 + (3 << 30)), "long past");
        assert_eq!(allowed_in_burst(&rl, &mut tat, 50), 40);
        assert!(!rl.is_full(tat, 1_999));
        assert!(rl.is_full(tat, 2_050));
    }
}
