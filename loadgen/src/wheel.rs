//! One hashed timer wheel per worker loop (STYLE.md 8): every session's next
//! deadline (heartbeat, login or connect timeout) sits in a slot of coarse
//! ticks, so thousands of sessions share a few thousand `Vec`s instead of
//! a heap entry or a timer each.
//!
//! Entries are lazy: the wheel never removes one. An entry carries the
//! tick it was armed for, and the owner ignores entries that no longer
//! match what it armed (see `Worker::arm`). Deadlines past one turn of
//! the wheel stay in their slot and are skipped until their turn comes.

/// A timer entry: which session (slab index and generation) and for which
/// tick it was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub idx: u32,
    pub generation: u32,
    pub tick: u64,
}

/// The wheel. Time is in ticks, chosen by the caller.
#[derive(Debug)]
pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    /// The last tick whose slot has been drained.
    done: u64,
    len: usize,
}

impl Wheel {
    /// A wheel of `slots` slots (rounded up to a power of two) whose first
    /// tick to fire is `now + 1`.
    pub fn new(slots: usize, now: u64) -> Wheel {
        let n = slots.max(2).next_power_of_two();
        Wheel {
            slots: (0..n).map(|_| Vec::new()).collect(),
            done: now,
            len: 0,
        }
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick as usize) & (self.slots.len() - 1)
    }

    /// Number of entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms `entry`. A tick already drained fires on the next advance.
    pub fn insert(&mut self, mut entry: Entry) {
        if entry.tick <= self.done {
            entry.tick = self.done + 1;
        }
        let s = self.slot_of(entry.tick);
        self.slots[s].push(entry);
        self.len += 1;
    }

    /// Moves time to `now`, appending every entry due at or before `now`
    /// to `fired`, in tick order.
    pub fn advance(&mut self, now: u64, fired: &mut Vec<Entry>) {
        if now <= self.done {
            return;
        }
        // Past a whole turn every slot is visited once.
        let turn = self.slots.len() as u64;
        let first = if now - self.done > turn {
            now - turn + 1
        } else {
            self.done + 1
        };
        for tick in first..=now {
            let s = self.slot_of(tick);
            let slot = &mut self.slots[s];
            let before = slot.len();
            slot.retain(|e| {
                if e.tick <= now {
                    fired.push(*e);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.done = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(idx: u32, tick: u64) -> Entry {
        Entry {
            idx,
            generation: 0,
            tick,
        }
    }

    #[test]
    fn fires_at_its_tick_and_not_before() {
        let mut w = Wheel::new(8, 0);
        w.insert(e(1, 3));
        w.insert(e(2, 5));
        let mut out = Vec::new();
        w.advance(2, &mut out);
        assert!(out.is_empty());
        w.advance(3, &mut out);
        assert_eq!(out, vec![e(1, 3)]);
        out.clear();
        w.advance(10, &mut out);
        assert_eq!(out, vec![e(2, 5)]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_turn_wait_for_their_turn() {
        let mut w = Wheel::new(4, 0);
        w.insert(e(7, 9));
        let mut out = Vec::new();
        for now in 1..9 {
            w.advance(now, &mut out);
            assert!(out.is_empty(), "fired early at {now}");
        }
        w.advance(9, &mut out);
        assert_eq!(out, vec![e(7, 9)]);
    }

    #[test]
    fn a_long_stall_fires_everything_due() {
        let mut w = Wheel::new(4, 0);
        for i in 1..=20 {
            w.insert(e(i as u32, i));
        }
        let mut out = Vec::new();
        w.advance(100, &mut out);
        assert_eq!(out.len(), 20);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_deadlines_fire_on_next_advance() {
        let mut w = Wheel::new(8, 5);
        w.insert(e(1, 2));
        let mut out = Vec::new();
        w.advance(6, &mut out);
        assert_eq!(out, vec![e(1, 6)]);
    }
}
