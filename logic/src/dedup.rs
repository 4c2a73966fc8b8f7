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
    /// (client_msg_id, msg_id) of the highest stored SEND.
    latest: Option<(u64, u64)>,
    /// In-flight client_msg_ids and the retries parked on each.
    inflight: Vec<(u64, Vec<W>)>,
}

impl<W> Default for Device<W> {
    fn default() -> Self {
        Device {
            latest: None,
            inflight: Vec::new(),
        }
    }
}

/// Dedup state of many devices. `W` is whatever the caller needs to answer
/// a parked retry.
#[derive(Debug)]
pub struct Dedup<W> {
    devices: HashMap<(u64, u32), Device<W>>,
}

impl<W> Default for Dedup<W> {
    fn default() -> Self {
        Dedup {
            devices: HashMap::new(),
        }
    }
}

impl<W> Dedup<W> {
    /// Decides a SEND with `cmid` from (`uin`, `device`). On
    /// [`Verdict::Proceed`] the id is in flight until [`Dedup::finish`].
    pub fn check(&mut self, uin: u64, device: u32, cmid: u64, waiter: W) -> Verdict {
        let d = self.devices.entry((uin, device)).or_default();
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

    /// Ends the in-flight SEND `cmid` and returns the retries parked on it,
    /// to be answered from `outcome`.
    pub fn finish<S>(&mut self, uin: u64, device: u32, cmid: u64, outcome: &Outcome<S>) -> Vec<W> {
        let Some(d) = self.devices.get_mut(&(uin, device)) else {
            return Vec::new();
        };
        let parked = match d.inflight.iter().position(|(id, _)| *id == cmid) {
            Some(i) => d.inflight.swap_remove(i).1,
            None => Vec::new(),
        };
        if let Outcome::Stored { msg_id } = *outcome
            && d.latest.is_none_or(|(latest, _)| cmid > latest)
        {
            d.latest = Some((cmid, msg_id));
        }
        parked
    }

    /// Number of devices with state.
    pub fn devices(&self) -> usize {
        self.devices.len()
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
        assert!(
            d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 5 })
                .is_empty()
        );
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
        let parked = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 3 });
        assert_eq!(parked, vec!["retry1", "retry2"]);
        assert_eq!(d.check(1, 1, 10, "late"), Verdict::Duplicate { msg_id: 3 });
    }

    #[test]
    fn latest_is_the_highest_stored_even_out_of_order() {
        let mut d = D::default();
        assert_eq!(d.check(1, 1, 20, "a"), Verdict::Proceed);
        assert_eq!(d.check(1, 1, 10, "b"), Verdict::Proceed);
        let _ = d.finish::<()>(1, 1, 20, &Outcome::Stored { msg_id: 2 });
        let _ = d.finish::<()>(1, 1, 10, &Outcome::Stored { msg_id: 1 });
        assert_eq!(d.check(1, 1, 20, "c"), Verdict::Duplicate { msg_id: 2 });
        assert_eq!(d.check(1, 1, 10, "d"), Verdict::Duplicate { msg_id: 0 });
    }
}
