//! The doorbell handshake: one thread sleeps in a poll and others hand it
//! work through queues; they ring its waker only when it said it is going
//! to sleep, so a busy sleeper costs its producers no syscall per item.
//!
//! The handshake is the classic store-buffering pattern, and it loses a
//! wake-up unless both sides are ordered by SeqCst fences:
//!
//! | sleeper ([`Bell::may_sleep`]) | producer ([`Bell::ring`]) |
//! |---|---|
//! | store `asleep = true` | publish the work (queue push) |
//! | **fence(SeqCst)** | **fence(SeqCst)** |
//! | look for work; none: sleep | swap `asleep` to false; was true: wake |
//!
//! The two fences are in one total order. If the sleeper's comes first,
//! the producer's swap reads its `asleep = true` (or a later store) and
//! wakes it; if the producer's comes first, the sleeper's look finds the
//! work and it does not sleep. Without them (a Release store and an AcqRel
//! swap, as this code had), the sleeper's look may run before its store is
//! visible and the producer's swap may read the old `false`: the work sits
//! in the queue and nobody wakes the sleeper. `tests/loom.rs` checks both
//! claims with loom: every interleaving of the fenced handshake wakes the
//! sleeper, and the unfenced one has an interleaving that does not.
//!
//! Whatever the queue's own orderings are, the fences carry the argument
//! (a Relaxed counter stands in for the queue in the model). A producer
//! may see `asleep` set by a sleeper that then found work and did not
//! sleep: that costs one spurious wake, never a lost one.
//!
//! [`sync`] is the facade that swaps std's atomics for loom's.
#![deny(unsafe_code)]

pub mod sync;

use sync::{AtomicBool, Ordering, fence};

/// The handshake's one flag: "the sleeper is about to sleep, or asleep".
#[derive(Debug)]
pub struct Bell {
    asleep: AtomicBool,
}

impl Default for Bell {
    fn default() -> Self {
        Bell::new()
    }
}

impl Bell {
    pub fn new() -> Bell {
        Bell {
            asleep: AtomicBool::new(false),
        }
    }

    /// Sleeper: announces the sleep, then runs `has_work` (which must look
    /// at every queue a producer rings for). Returns true if the caller may
    /// sleep without a timeout: every producer that publishes work from now
    /// on will see [`Bell::ring`] return true. When `has_work` finds
    /// something, the announcement is withdrawn and false returned.
    pub fn may_sleep(&self, has_work: impl FnOnce() -> bool) -> bool {
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if has_work() {
            self.asleep.store(false, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    /// Sleeper: back from the poll (woken, timed out, or it never slept).
    pub fn awake(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// Producer: call after publishing work. True when the sleeper said it
    /// would sleep: the caller must wake it (once: the flag is cleared).
    pub fn ring(&self) -> bool {
        fence(Ordering::SeqCst);
        self.asleep.swap(false, Ordering::Relaxed)
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::Bell;

    #[test]
    fn a_ring_wakes_only_an_announced_sleeper_and_only_once() {
        let b = Bell::new();
        assert!(!b.ring(), "nobody is asleep");
        assert!(b.may_sleep(|| false));
        assert!(b.ring());
        assert!(!b.ring(), "the first ring took the flag");
        assert!(!b.may_sleep(|| true), "work found: no sleep");
        assert!(!b.ring(), "withdrawn");
        assert!(b.may_sleep(|| false));
        b.awake();
        assert!(!b.ring());
    }
}
