//! One channel's in-memory state, sans-io: the `msg_id` counter (rule 6)
//! and the newest retained messages (rule 9). Time is an argument; nothing
//! here reads a clock.
//!
//! Messages are kept as their already-encoded PUSH frame, so a SYNC
//! replays them without re-encoding and a live fan-out encodes once; the
//! store holds the same frames for everything older than the memory tail.

use std::collections::VecDeque;

use bytes::Bytes;

/// Channel ids are the protocol's (`proto::channel`).
pub use proto::channel::{ChannelKind, INBOX_BIT, inbox_of, kind_of};

/// Retention limits (rule 9): the newest `max_count` messages, none older
/// than `max_age_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_count: usize,
    pub max_age_ms: u64,
}

impl Retention {
    /// The oldest `msg_id` the count limit keeps when `newest` is the
    /// newest (ids below it are gone; 1 while the channel is young).
    pub fn first_kept(&self, newest: u64) -> u64 {
        newest.saturating_sub(self.max_count as u64) + 1
    }

    /// Messages stored before this instant have expired by age.
    pub fn oldest_allowed_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.max_age_ms)
    }
}

/// Most messages of one channel kept in memory for SYNC and re-delivery;
/// older retained ones are read from the store.
pub const MEMORY_TAIL: usize = 64;

/// A stored message: its id, when it was stored, and its PUSH frame.
#[derive(Debug, Clone)]
pub struct Stored {
    pub msg_id: u64,
    pub at_ms: u64,
    pub frame: Bytes,
}

/// What [`Channel::append`] did.
#[derive(Debug, Clone)]
#[must_use]
pub struct Appended {
    pub msg_id: u64,
    pub frame: Bytes,
}

/// One loaded channel: its counter and the newest messages (at most
/// [`MEMORY_TAIL`]). Membership lives elsewhere (the store and the
/// shard's online index), so an idle channel costs only this and can be
/// evicted and reloaded from its stored head.
#[derive(Debug, Default)]
pub struct Channel {
    newest: u64,
    /// Contiguous ids ending at `newest` (possibly empty).
    tail: VecDeque<Stored>,
    touched_ms: u64,
}

impl Channel {
    /// A channel whose stored head is `newest`, loaded at `now_ms`.
    pub fn loaded(newest: u64, now_ms: u64) -> Channel {
        Channel {
            newest,
            tail: VecDeque::new(),
            touched_ms: now_ms,
        }
    }

    /// The newest `msg_id` assigned (0 before the first message). Never goes
    /// back, even when messages expire.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Records a use at `now_ms` (idle channels are evicted).
    pub fn touch(&mut self, now_ms: u64) {
        self.touched_ms = self.touched_ms.max(now_ms);
    }

    /// When the channel was last used.
    pub fn touched_ms(&self) -> u64 {
        self.touched_ms
    }

    /// Assigns the next `msg_id`, keeps the frame `make_frame` builds for
    /// it and returns both. Ids start at 1 and go up by exactly 1.
    pub fn append(
        &mut self,
        now_ms: u64,
        ret: Retention,
        make_frame: impl FnOnce(u64) -> Bytes,
    ) -> Appended {
        self.newest += 1;
        let msg_id = self.newest;
        let frame = make_frame(msg_id);
        self.tail.push_back(Stored {
            msg_id,
            at_ms: now_ms,
            frame: frame.clone(),
        });
        self.touch(now_ms);
        self.prune(now_ms, ret);
        Appended { msg_id, frame }
    }

    /// Drops from memory what retention no longer allows and what is past
    /// the memory tail.
    pub fn prune(&mut self, now_ms: u64, ret: Retention) {
        let keep = ret.max_count.min(MEMORY_TAIL);
        while self.tail.len() > keep {
            self.tail.pop_front();
        }
        let oldest_allowed = ret.oldest_allowed_ms(now_ms);
        while self.tail.front().is_some_and(|m| m.at_ms < oldest_allowed) {
            self.tail.pop_front();
        }
    }

    /// The first id held in memory (`newest + 1` when none is).
    pub fn tail_first(&self) -> u64 {
        self.tail.front().map_or(self.newest + 1, |m| m.msg_id)
    }

    /// The messages in memory with ids from `from` on, oldest first.
    pub fn tail_from(&self, from: u64) -> impl Iterator<Item = &Stored> {
        let skip = from
            .saturating_sub(self.tail_first())
            .min(self.tail.len() as u64);
        self.tail.iter().skip(skip as usize)
    }

    /// Number of messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.tail.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RET: Retention = Retention {
        max_count: 3,
        max_age_ms: 1_000,
    };

    fn frame(id: u64) -> Bytes {
        Bytes::from(id.to_be_bytes().to_vec())
    }

    fn ids<'a>(it: impl Iterator<Item = &'a Stored>) -> Vec<u64> {
        it.map(|m| m.msg_id).collect()
    }

    #[test]
    fn ids_start_at_one_and_never_skip() {
        let mut c = Channel::default();
        assert_eq!(c.newest(), 0);
        let got: Vec<u64> = (0..10).map(|i| c.append(i, RET, frame).msg_id).collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        assert_eq!(c.newest(), 10);
    }

    #[test]
    fn a_reloaded_channel_goes_on_from_its_head() {
        let mut c = Channel::loaded(41, 0);
        assert_eq!(c.tail_first(), 42, "nothing in memory");
        assert_eq!(c.append(1, RET, frame).msg_id, 42);
        assert_eq!(ids(c.tail_from(0)), vec![42]);
    }

    #[test]
    fn keeps_newest_n_in_memory() {
        let mut c = Channel::default();
        for t in 0..5 {
            let _ = c.append(t, RET, frame);
        }
        assert_eq!(c.in_memory(), 3);
        assert_eq!(ids(c.tail_from(0)), vec![3, 4, 5]);
        assert_eq!(ids(c.tail_from(4)), vec![4, 5]);
        assert_eq!(ids(c.tail_from(6)), Vec::<u64>::new());
        assert_eq!(RET.first_kept(5), 3);
        assert_eq!(RET.first_kept(2), 1);
        let m = c.tail_from(5).next().expect("message 5");
        assert_eq!(m.frame, frame(5));
    }

    #[test]
    fn expires_by_age_but_counter_survives() {
        let mut c = Channel::default();
        let _ = c.append(0, RET, frame);
        let _ = c.append(500, RET, frame);
        c.prune(1_000, RET);
        assert_eq!(ids(c.tail_from(0)), vec![1, 2]);
        c.prune(1_001, RET);
        assert_eq!(ids(c.tail_from(0)), vec![2]);
        c.prune(1_501, RET);
        assert_eq!(c.tail_first(), 3);
        assert_eq!(c.append(1_600, RET, frame).msg_id, 3);
    }

    #[test]
    fn zero_retention_still_counts() {
        let ret = Retention {
            max_count: 0,
            max_age_ms: 1_000,
        };
        let mut c = Channel::default();
        let a = c.append(0, ret, frame);
        assert_eq!((a.msg_id, a.frame), (1, frame(1)));
        assert_eq!(c.in_memory(), 0);
        assert_eq!(c.append(1, ret, frame).msg_id, 2);
    }

    #[test]
    fn memory_holds_at_most_the_tail() {
        let ret = Retention {
            max_count: 10_000,
            max_age_ms: u64::MAX,
        };
        let mut c = Channel::default();
        for t in 0..(MEMORY_TAIL as u64 + 10) {
            let _ = c.append(t, ret, frame);
        }
        assert_eq!(c.in_memory(), MEMORY_TAIL);
        assert_eq!(c.tail_first(), 11);
    }
}
