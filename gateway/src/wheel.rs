//! A hashed timing wheel, one per worker thread, sans-io.
//!
//! It drives the login timeout and idle expiry of every connection the
//! worker holds. Design (after tokio's `wheel/level.rs` and
//! pingora-timeout):
//!
//! - Time is coarse: deadlines are rounded *up* to a tick (default 100 ms),
//!   so a timer never fires early and timers with nearby deadlines share a
//!   slot.
//! - `slots` is a power of two; a deadline lands in slot `tick & mask`.
//!   Deadlines beyond the wheel's horizon are parked in the farthest slot:
//!   when it fires, the owner re-checks its real deadline and re-inserts
//!   (see below), so the wheel needs no per-entry "rounds" counter and every
//!   entry in a slot is due when the slot is reached.
//! - The links of each slot's doubly linked list live *inside the caller's
//!   entries* (the connection slab), reached through [`Links`]: insert and
//!   cancel are O(1) and allocate nothing, and the wheel itself costs one
//!   `u32` head per slot plus an occupancy bitmap used to find the next due
//!   slot without scanning empty ones.
//! - Lazy re-arm: a heartbeat does not touch the wheel. The owner records
//!   the last-seen time; when the slot fires it re-checks and, if the
//!   session is still alive, re-inserts at the new deadline. One wheel
//!   operation per idle period instead of one per frame.

/// "No entry" in a link or a slot head.
pub const NIL: u32 = u32::MAX;

/// The intrusive list links a wheel entry carries: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    prev: u32,
    next: u32,
    /// Slot the entry is linked into, or [`NIL`] when not armed.
    slot: u32,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            prev: NIL,
            next: NIL,
            slot: NIL,
        }
    }
}

impl Link {
    /// True while the entry is in the wheel.
    pub fn is_armed(&self) -> bool {
        self.slot != NIL
    }
}

/// Access to the [`Link`] embedded in the caller's entry `key`.
pub trait Links {
    fn link(&mut self, key: u32) -> &mut Link;
}

impl Links for Vec<Link> {
    fn link(&mut self, key: u32) -> &mut Link {
        &mut self[key as usize]
    }
}

/// A hashed timing wheel over entries identified by `u32` keys.
#[derive(Debug)]
pub struct Wheel {
    heads: Box<[u32]>,
    occupied: Box<[u64]>,
    mask: u64,
    tick_ms: u64,
    /// Every slot for ticks `<= now_tick` has been fired.
    now_tick: u64,
    len: usize,
}

impl Wheel {
    /// A wheel of `slots` slots (rounded up to a power of two, at least 64)
    /// of `tick_ms` each, with time starting at `now_ms`.
    pub fn new(slots: usize, tick_ms: u64, now_ms: u64) -> Wheel {
        let slots = slots.max(64).next_power_of_two();
        let tick_ms = tick_ms.max(1);
        Wheel {
            heads: vec![NIL; slots].into_boxed_slice(),
            occupied: vec![0; slots / 64].into_boxed_slice(),
            mask: slots as u64 - 1,
            tick_ms,
            now_tick: now_ms / tick_ms,
            len: 0,
        }
    }

    /// Number of armed entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// The farthest deadline (ms) an entry can be inserted at without being
    /// parked short of it.
    pub fn horizon_ms(&self) -> u64 {
        (self.now_tick + self.mask) * self.tick_ms
    }

    /// Arms `key` to fire at the first tick at or after `deadline_ms`, or
    /// at the horizon if that is sooner. An already armed key is moved.
    pub fn insert(&mut self, links: &mut impl Links, key: u32, deadline_ms: u64) {
        if links.link(key).is_armed() {
            self.cancel(links, key);
        }
        let tick = deadline_ms
            .div_ceil(self.tick_ms)
            .clamp(self.now_tick + 1, self.now_tick + self.mask);
        let slot = (tick & self.mask) as u32;
        let head = self.heads[slot as usize];
        *links.link(key) = Link {
            prev: NIL,
            next: head,
            slot,
        };
        if head != NIL {
            links.link(head).prev = key;
        }
        self.heads[slot as usize] = key;
        self.occupied[slot as usize / 64] |= 1 << (slot % 64);
        self.len += 1;
    }

    /// Disarms `key`; a no-op when it is not armed.
    pub fn cancel(&mut self, links: &mut impl Links, key: u32) {
        let Link { prev, next, slot } = *links.link(key);
        if slot == NIL {
            return;
        }
        if prev == NIL {
            self.heads[slot as usize] = next;
            if next == NIL {
                self.occupied[slot as usize / 64] &= !(1 << (slot % 64));
            }
        } else {
            links.link(prev).next = next;
        }
        if next != NIL {
            links.link(next).prev = prev;
        }
        *links.link(key) = Link::default();
        self.len -= 1;
    }

    /// Advances time to `now_ms`, disarming every entry whose tick has come
    /// and appending its key to `fired`.
    pub fn advance(&mut self, links: &mut impl Links, now_ms: u64, fired: &mut Vec<u32>) {
        let target = now_ms / self.tick_ms;
        while self.now_tick < target {
            if self.len == 0 {
                self.now_tick = target;
                break;
            }
            // Jump straight to the next occupied slot, if it is due.
            let Some(next) = self.next_occupied_tick() else {
                self.now_tick = target;
                break;
            };
            if next > target {
                self.now_tick = target;
                break;
            }
            self.now_tick = next;
            let slot = (next & self.mask) as usize;
            let mut key = std::mem::replace(&mut self.heads[slot], NIL);
            self.occupied[slot / 64] &= !(1 << (slot % 64));
            while key != NIL {
                let link = links.link(key);
                let next_key = link.next;
                *link = Link::default();
                self.len -= 1;
                fired.push(key);
                key = next_key;
            }
        }
    }

    /// The time (ms) at which the next armed entry fires, if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.next_occupied_tick().map(|t| t * self.tick_ms)
    }

    /// The first tick after `now_tick` whose slot is occupied.
    fn next_occupied_tick(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let slots = self.mask + 1;
        let start = (self.now_tick + 1) & self.mask;
        // Scan the bitmap from `start`, wrapping once.
        let words = self.occupied.len();
        let first_word = (start / 64) as usize;
        for i in 0..=words {
            let w = (first_word + i) % words;
            let mut bits = self.occupied[w];
            if i == 0 {
                bits &= !0u64 << (start % 64);
            } else if i == words {
                bits &= !(!0u64 << (start % 64));
            }
            if bits != 0 {
                let slot = w as u64 * 64 + bits.trailing_zeros() as u64;
                let ahead = (slot + slots - start) % slots;
                return Some(self.now_tick + 1 + ahead);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn wheel(n: usize) -> (Wheel, Vec<Link>) {
        (Wheel::new(4096, 100, 0), vec![Link::default(); n])
    }

    #[test]
    fn fires_at_the_first_tick_at_or_after_the_deadline() {
        let (mut w, mut l) = wheel(3);
        w.insert(&mut l, 0, 250); // rounds up to tick 3 (300 ms)
        w.insert(&mut l, 1, 300);
        w.insert(&mut l, 2, 301); // tick 4
        let mut fired = vec![];
        w.advance(&mut l, 299, &mut fired);
        assert!(fired.is_empty(), "nothing fires early");
        w.advance(&mut l, 300, &mut fired);
        fired.sort();
        assert_eq!(fired, vec![0, 1]);
        fired.clear();
        assert_eq!(w.next_deadline_ms(), Some(400));
        w.advance(&mut l, 450, &mut fired);
        assert_eq!(fired, vec![2]);
        assert!(w.is_empty());
        assert!(!l[2].is_armed());
    }

    #[test]
    fn cancel_unlinks_from_anywhere_in_a_slot() {
        let (mut w, mut l) = wheel(4);
        for k in 0..4 {
            w.insert(&mut l, k, 1_000);
        }
        w.cancel(&mut l, 2); // middle
        w.cancel(&mut l, 3); // head
        w.cancel(&mut l, 0); // tail
        w.cancel(&mut l, 0); // twice is a no-op
        assert_eq!(w.len(), 1);
        let mut fired = vec![];
        w.advance(&mut l, 1_000, &mut fired);
        assert_eq!(fired, vec![1]);
        assert_eq!(w.next_deadline_ms(), None);
    }

    #[test]
    fn reinsert_moves_an_armed_entry() {
        let (mut w, mut l) = wheel(1);
        w.insert(&mut l, 0, 500);
        w.insert(&mut l, 0, 900);
        assert_eq!(w.len(), 1);
        let mut fired = vec![];
        w.advance(&mut l, 800, &mut fired);
        assert!(fired.is_empty());
        w.advance(&mut l, 900, &mut fired);
        assert_eq!(fired, vec![0]);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_tick() {
        let mut w = Wheel::new(64, 10, 1_000);
        let mut l = vec![Link::default(); 1];
        w.insert(&mut l, 0, 5);
        let mut fired = vec![];
        w.advance(&mut l, 1_009, &mut fired);
        assert!(fired.is_empty());
        w.advance(&mut l, 1_010, &mut fired);
        assert_eq!(fired, vec![0]);
    }

    #[test]
    fn deadlines_past_the_horizon_are_parked_then_rearmed() {
        let mut w = Wheel::new(64, 10, 0); // horizon 630 ms
        let mut l = vec![Link::default(); 1];
        let deadline = 5_000;
        w.insert(&mut l, 0, deadline);
        let mut fired = vec![];
        let mut now = 0;
        let mut firings = 0;
        loop {
            now += 10;
            w.advance(&mut l, now, &mut fired);
            if let Some(k) = fired.pop() {
                firings += 1;
                if now >= deadline {
                    break;
                }
                w.insert(&mut l, k, deadline); // lazy re-arm
            }
        }
        assert_eq!(now, deadline);
        assert!(firings > 1, "was parked at least once");
    }

    #[test]
    fn a_long_pause_fires_everything_due_once() {
        let mut w = Wheel::new(64, 10, 0);
        let mut l = vec![Link::default(); 100];
        for k in 0..100 {
            w.insert(&mut l, k, u64::from(k) * 7);
        }
        let mut fired = vec![];
        w.advance(&mut l, 10_000, &mut fired);
        fired.sort();
        assert_eq!(fired, (0..100).collect::<Vec<_>>());
        assert!(w.is_empty());
    }

    /// A million entries with random deadlines, some beyond the horizon,
    /// random cancels, driven by a virtual clock: each entry fires exactly
    /// once, in the tick its deadline rounds up to, and cancelled entries
    /// never fire.
    #[test]
    fn a_million_random_deadlines_each_fire_in_the_right_tick() {
        const N: usize = 1_000_000;
        const TICK: u64 = 100;
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut w = Wheel::new(4096, TICK, 0); // horizon ~409 s
        let mut l = vec![Link::default(); N];
        let deadlines: Vec<u64> = (0..N).map(|_| rng.random_range(1..900_000)).collect();
        let cancelled: Vec<bool> = (0..N).map(|_| rng.random_ratio(1, 10)).collect();
        for (k, d) in deadlines.iter().enumerate() {
            w.insert(&mut l, k as u32, *d);
        }
        for (k, c) in cancelled.iter().enumerate() {
            if *c {
                w.cancel(&mut l, k as u32);
            }
        }
        let mut fired_at = vec![u64::MAX; N];
        let mut fired = Vec::new();
        let mut now = 0;
        // Step by uneven amounts, as a busy event loop would.
        while !w.is_empty() {
            now += rng.random_range(1..=3 * TICK);
            w.advance(&mut l, now, &mut fired);
            for k in fired.drain(..) {
                let d = deadlines[k as usize];
                if d.div_ceil(TICK) * TICK > now {
                    w.insert(&mut l, k, d); // parked: re-arm lazily
                } else {
                    assert_eq!(fired_at[k as usize], u64::MAX, "fired twice");
                    fired_at[k as usize] = now;
                }
            }
        }
        for k in 0..N {
            if cancelled[k] {
                assert_eq!(fired_at[k], u64::MAX, "cancelled entry {k} fired");
                continue;
            }
            let due = deadlines[k].div_ceil(TICK) * TICK;
            // Fired at the first advance at or after its tick: never early,
            // and late only by the step of the virtual clock.
            assert!(fired_at[k] >= due, "entry {k} early");
            assert!(fired_at[k] < due + 3 * TICK, "entry {k} late");
        }
    }

    /// With a clock that stops at every tick, each entry fires in exactly
    /// the tick its deadline rounds up to.
    #[test]
    fn tick_by_tick_firing_is_exact() {
        const N: usize = 200_000;
        let mut rng = StdRng::seed_from_u64(7);
        let mut w = Wheel::new(1024, 10, 0);
        let mut l = vec![Link::default(); N];
        let deadlines: Vec<u64> = (0..N).map(|_| rng.random_range(0..30_000)).collect();
        for (k, d) in deadlines.iter().enumerate() {
            w.insert(&mut l, k as u32, *d);
        }
        let mut fired = Vec::new();
        let mut now = 0;
        let mut seen = 0;
        while !w.is_empty() {
            now += 10;
            w.advance(&mut l, now, &mut fired);
            for k in fired.drain(..) {
                let d = deadlines[k as usize];
                if d > now {
                    w.insert(&mut l, k, d);
                } else {
                    assert_eq!(now, d.div_ceil(10).max(1) * 10, "entry {k}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, N);
    }
}
