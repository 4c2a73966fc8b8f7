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
//! Durability: the channel's shard stores a dedup record with each message
//! (in the same batch), and [`Dedup::finish`] names the record a newer one
//! superseded, for the uin's shard to drop; after a restart or an eviction
//! the device is [`Dedup::seed`]ed from the largest stored record.

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

/// What [`Dedup::finish`] hands back.
#[derive(Debug)]
#[must_use]
pub struct Finished<W> {
    /// Retries parked on the SEND, to answer from its outcome.
    pub parked: Vec<W>,
    /// A stored `client_msg_id` that is no longer "latest" (the previous
    /// latest, or this one if a larger one was stored first): its record
    /// can be dropped from the store.
    pub superseded: Option<u64>,
}

#[derive(Debug)]
struct Device<W> {
    device: u32,
    /// (client_msg_id, msg_id) of the highest stored SEND.
    latest: Option<(u64, u64)>,
    /// In-flight client_msg_ids and the retries parked on each.
    inflight: Vec<(u64, Vec<W>)>,
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
        if let Some((_, parked)) = d.inflight.iter_mut().find(|(id, _)| *id == cmid) {
            parked.push(waiter);
            return Verdict::Parked;
        }
        d.inflight.push((cmid, Vec::new()));
        Verdict::Proceed
    }

    /// Ends the in-flight SEND `cmid`: returns the retries parked on it and
    /// the record it superseded.
    pub fn finish<S>(
        &mut self,
        uin: u64,
        device: u32,
        cmid: u64,
        outcome: &Outcome<S>,
    ) -> Finished<W> {
        let mut done = Finished {
            parked: Vec::new(),
            superseded: None,
        };
        let Some(d) = self.device(uin, device) else {
            return done;
        };
        if let Some(i) = d.inflight.iter().position(|(id, _)| *id == cmid) {
            done.parked = d.inflight.swap_remove(i).1;
        }
        if let Outcome::Stored { msg_id } = *outcome {
            match d.latest {
                Some((latest, _)) if latest >= cmid => done.superseded = Some(cmid),
                prev => {
                    done.superseded = prev.map(|(c, _)| c);
                    d.latest = Some((cmid, msg_id));
                }
            }
        }
        done
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
        assert!(f.parked.is_empty());
        assert_eq!(f.superseded, None);
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
        assert_eq!(f.parked, vec!["retry1", "retry2"]);
        assert_eq!(d.check(1, 1, 10, "late"), Verdict::Duplicate { msg_id: 3 });
    }

    #[test]
    fn latest_is_the_highest_stored_even_out_of_order() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 20, "a"), Verdict::Proceed);
        assert_eq!(d.check(1, 1, 10, "b"), Verdict::Proceed);
        let f = d.finish::<()>(1, 1, 20, &Outcome::Stored { msg_id: 2 });
        assert_eq!(f.superseded, None);
        let f = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 1 });
        assert_eq!(f.superseded, Some(10), "smaller than latest: dropped");
        assert_eq!(d.check(1, 1, 20, "c"), Verdict::Duplicate { msg_id: 2 });
        assert_eq!(d.check(1, 1, 10, "d"), Verdict::Duplicate { msg_id: 0 });
    }

    #[test]
    fn the_previous_latest_is_superseded() {
        let mut d = D::default();
        d.seed(1, 1, Some((7, 70)));
        assert_eq!(d.check(1, 1, 7, "a"), Verdict::Duplicate { msg_id: 70 });
        assert_eq!(d.check(1, 1, 8, "b"), Verdict::Proceed);
        let f = d.finish::<()>(1, 1, 8, &Outcome::Stored { msg_id: 71 });
        assert_eq!(f.superseded, Some(7));
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
