//! SEND deduplication per (`uin`, `device_id`), exactly as PROTOCOL.md
//! rule 7, sans-io.
//!
//! "Latest" is the highest `client_msg_id` that got stored, with the
//! `msg_id` it got. A SEND repeating it is a DUPLICATE with that `msg_id`;
//! one below it a DUPLICATE with `msg_id` 0. Only a stored message advances
//! latest, so a refused SEND may be retried with the same id.
//!
//! A SEND travels to its channel's shard before it is known to be stored,
//! so a retry can arrive while the original is still in flight. Such a
//! retry is parked (the caller's `W` value) and answered when the original
//! finishes: DUPLICATE with the original's `msg_id` if it was stored, or
//! the original's refusal otherwise. Nothing is ever stored twice.
//!
//! A SEND below one still in flight is parked behind it (a client that
//! breaks rule 7's increasing ids gets the answer the sequential order
//! gives: DUPLICATE 0 once the larger one is stored), so the SENDs of one
//! device leave here in increasing `client_msg_id` order.
//!
//! Durability: the channel's shard stores the device's latest with each
//! message (in the same batch, one record per channel shard); after a
//! restart or an eviction the device is [`Dedup::seed`]ed from the largest
//! stored record.

use std::collections::HashMap;

/// What to do with a SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// New: store it, then call [`Dedup::finish`].
    Proceed,
    /// Answer DUPLICATE with this `msg_id` (0 for an id below latest).
    Duplicate { msg_id: u64 },
    /// The same id is in flight; the waiter was parked.
    Parked,
}

/// How an in-flight SEND ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<S> {
    Stored { msg_id: u64 },
    Refused(S),
}

#[derive(Debug)]
struct Device<W> {
    device: u32,
    /// (client_msg_id, msg_id) of the highest stored SEND.
    latest: Option<(u64, u64)>,
    /// In-flight client_msg_ids (increasing) and the SENDs parked on each:
    /// retries of it, and lower ids that arrived while it was in flight,
    /// each with its own client_msg_id.
    inflight: Vec<(u64, Vec<(u64, W)>)>,
}

/// Dedup state of many devices, grouped by uin so that a user's state
/// can be loaded and evicted together. `W` is whatever the caller needs to
/// answer a parked retry.
///
/// A device must be [`Dedup::seed`]ed (from the store) before its first
/// [`Dedup::check`]; [`Dedup::forget`] evicts a user whose SENDs are all
/// finished.
#[derive(Debug)]
pub struct Dedup<W> {
    users: HashMap<u64, Vec<Device<W>>>,
}

impl<W> Default for Dedup<W> {
    fn default() -> Self {
        Dedup {
            users: HashMap::new(),
        }
    }
}

impl<W> Dedup<W> {
    /// Whether (`uin`, `device`) is loaded.
    pub fn has(&self, uin: u64, device: u32) -> bool {
        self.users
            .get(&uin)
            .is_some_and(|v| v.iter().any(|d| d.device == device))
    }

    /// Loads (`uin`, `device`) with its stored latest; no-op if loaded.
    pub fn seed(&mut self, uin: u64, device: u32, latest: Option<(u64, u64)>) {
        let v = self.users.entry(uin).or_default();
        if !v.iter().any(|d| d.device == device) {
            v.push(Device {
                device,
                latest,
                inflight: Vec::new(),
            });
        }
    }

    fn device(&mut self, uin: u64, device: u32) -> Option<&mut Device<W>> {
        self.users
            .get_mut(&uin)?
            .iter_mut()
            .find(|d| d.device == device)
    }

    /// Decides a SEND with `cmid` from (`uin`, `device`), which must be
    /// seeded (an unseeded device counts as having no latest). On
    /// [`Verdict::Proceed`] the id is in flight until [`Dedup::finish`].
    pub fn check(&mut self, uin: u64, device: u32, cmid: u64, waiter: W) -> Verdict {
        self.seed(uin, device, None);
        let Some(d) = self.device(uin, device) else {
            return Verdict::Proceed;
        };
        if let Some((latest, msg_id)) = d.latest {
            if cmid == latest {
                return Verdict::Duplicate { msg_id };
            }
            if cmid < latest {
                return Verdict::Duplicate { msg_id: 0 };
            }
        }
        // The same id in flight, or a larger one: wait for it.
        if let Some((_, parked)) = d.inflight.iter_mut().rev().find(|(id, _)| *id >= cmid) {
            parked.push((cmid, waiter));
            return Verdict::Parked;
        }
        d.inflight.push((cmid, Vec::new()));
        Verdict::Proceed
    }

    /// Ends the in-flight SEND `cmid`: returns the SENDs parked on it, each
    /// with its client_msg_id (a retry of `cmid` is answered with the
    /// outcome, DUPLICATE and the original id if stored; a lower id with
    /// DUPLICATE 0 if stored, the same refusal otherwise).
    pub fn finish<S>(
        &mut self,
        uin: u64,
        device: u32,
        cmid: u64,
        outcome: &Outcome<S>,
    ) -> Vec<(u64, W)> {
        let Some(d) = self.device(uin, device) else {
            return Vec::new();
        };
        let parked = match d.inflight.iter().position(|(id, _)| *id == cmid) {
            Some(i) => d.inflight.remove(i).1,
            None => Vec::new(),
        };
        if let Outcome::Stored { msg_id } = *outcome
            && d.latest.is_none_or(|(latest, _)| cmid > latest)
        {
            d.latest = Some((cmid, msg_id));
        }
        parked
    }

    /// Whether any SEND of `uin` is in flight.
    pub fn busy(&self, uin: u64) -> bool {
        self.users
            .get(&uin)
            .is_some_and(|v| v.iter().any(|d| !d.inflight.is_empty()))
    }

    /// Evicts `uin`'s devices unless a SEND of theirs is in flight; true
    /// if evicted (or not loaded).
    pub fn forget(&mut self, uin: u64) -> bool {
        if self.busy(uin) {
            return false;
        }
        self.users.remove(&uin);
        true
    }

    /// Releases spare capacity once mostly empty (after evictions).
    pub fn shrink_to_fit(&mut self) {
        if self.users.len() < self.users.capacity() / 4 {
            self.users.shrink_to_fit();
        }
    }

    /// Number of loaded devices.
    pub fn devices(&self) -> usize {
        self.users.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type D = Dedup<&'static str>;

    #[test]
    fn repeat_of_latest_gets_original_id_and_lower_gets_zero() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 10, "a"), Verdict::Proceed);
        let f = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 5 });
        assert!(f.is_empty());
        assert_eq!(d.check(1, 1, 10, "b"), Verdict::Duplicate { msg_id: 5 });
        assert_eq!(d.check(1, 1, 9, "c"), Verdict::Duplicate { msg_id: 0 });
        assert_eq!(d.check(1, 1, 11, "d"), Verdict::Proceed);
    }

    #[test]
    fn devices_and_users_are_independent() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 10, "a"), Verdict::Proceed);
        let _ = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 5 });
        assert_eq!(d.check(1, 2, 10, "b"), Verdict::Proceed);
        assert_eq!(d.check(2, 1, 10, "c"), Verdict::Proceed);
        assert_eq!(d.devices(), 3);
    }

    #[test]
    fn refused_send_does_not_advance_latest() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 10, "a"), Verdict::Proceed);
        let _ = d.finish(1, 1, 10, &Outcome::Refused("not member"));
        assert_eq!(d.check(1, 1, 10, "b"), Verdict::Proceed);
        let _ = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 1 });
        assert_eq!(d.check(1, 1, 10, "c"), Verdict::Duplicate { msg_id: 1 });
    }

    #[test]
    fn retry_in_flight_is_parked_and_released() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 10, "orig"), Verdict::Proceed);
        assert_eq!(d.check(1, 1, 10, "retry1"), Verdict::Parked);
        assert_eq!(d.check(1, 1, 10, "retry2"), Verdict::Parked);
        let f = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 3 });
        assert_eq!(f, vec![(10, "retry1"), (10, "retry2")]);
        assert_eq!(d.check(1, 1, 10, "late"), Verdict::Duplicate { msg_id: 3 });
    }

    #[test]
    fn a_lower_id_waits_for_a_larger_one_in_flight() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 20, "a"), Verdict::Proceed);
        assert_eq!(d.check(1, 1, 10, "b"), Verdict::Parked, "not sent ahead");
        let f = d.finish::<()>(1, 1, 20, &Outcome::Stored { msg_id: 2 });
        assert_eq!(f, vec![(10, "b")], "answered DUPLICATE 0 by the caller");
        assert_eq!(d.check(1, 1, 20, "c"), Verdict::Duplicate { msg_id: 2 });
        assert_eq!(d.check(1, 1, 10, "d"), Verdict::Duplicate { msg_id: 0 });
    }

    #[test]
    fn a_seeded_latest_counts() {
        let mut d = D::default();
        d.seed(1, 1, Some((7, 70)));
        assert_eq!(d.check(1, 1, 7, "a"), Verdict::Duplicate { msg_id: 70 });
        assert_eq!(d.check(1, 1, 6, "b"), Verdict::Duplicate { msg_id: 0 });
        assert_eq!(d.check(1, 1, 8, "c"), Verdict::Proceed);
    }

    #[test]
    fn a_user_with_sends_in_flight_is_not_forgotten() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 1, "a"), Verdict::Proceed);
        assert!(d.busy(1));
        assert!(!d.forget(1));
        assert!(d.has(1, 1));
        let _ = d.finish::<()>(1, 1, 1, &Outcome::Stored { msg_id: 1 });
        assert!(d.forget(1));
        assert!(!d.has(1, 1));
        assert_eq!(d.devices(), 0);
    }
}
