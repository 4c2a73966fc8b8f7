//! Rule 12's pacing, sans-io: a draining worker sends every live session
//! GOAWAY with a reconnect delay spread evenly over the drain window, and
//! closes each at that same offset; the worker is done when every
//! connection is gone or the window and a grace have passed.

use std::collections::VecDeque;

use super::ConnConfig;

/// Extra time a draining worker allows for lingering closes.
pub const DRAIN_GRACE_MS: u64 = 3_000;

/// One worker's drain schedule.
#[derive(Debug)]
pub struct Drain {
    /// Sessions to close, paced: (close at ms, slot, epoch).
    queue: VecDeque<(u64, usize, u64)>,
    /// When the worker stops whatever is left.
    deadline: u64,
    start: u64,
    live: u64,
    drain_ms: u64,
    worker: u64,
    workers: u64,
}

impl Drain {
    /// A drain starting at `now_ms` over `live` sessions.
    pub fn new(now_ms: u64, cfg: &ConnConfig, live: usize) -> Drain {
        Drain {
            queue: VecDeque::with_capacity(live),
            deadline: now_ms + cfg.drain_ms + DRAIN_GRACE_MS,
            start: now_ms,
            live: live.max(1) as u64,
            drain_ms: cfg.drain_ms,
            worker: cfg.worker as u64,
            workers: cfg.workers.max(1) as u64,
        }
    }

    /// Schedules the next live session (slot, epoch); returns the delay its
    /// GOAWAY announces, after which it is closed.
    pub fn schedule(&mut self, slot: usize, epoch: u64) -> u32 {
        let i = self.queue.len() as u64;
        let offset = offset(self.drain_ms, i, self.live, self.worker, self.workers);
        self.queue.push_back((self.start + offset, slot, epoch));
        offset as u32
    }

    /// Sessions scheduled so far.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next session whose close is due at `now_ms`: (slot, epoch).
    pub fn poll_due(&mut self, now_ms: u64) -> Option<(usize, u64)> {
        if self.queue.front().is_some_and(|(at, ..)| *at <= now_ms) {
            return self.queue.pop_front().map(|(_, slot, epoch)| (slot, epoch));
        }
        None
    }

    /// When the drain next needs the worker (ms).
    #[must_use]
    pub fn poll_timeout(&self) -> u64 {
        self.queue.front().map_or(self.deadline, |(at, ..)| *at)
    }

    /// The worker is done: no connection is left, or time is up.
    pub fn is_over(&self, now_ms: u64, open: usize) -> bool {
        open == 0 || now_ms >= self.deadline
    }
}

/// The GOAWAY delay of the `i`th of `n` live sessions of worker `w` of
/// `workers`: the workers' delays interleave (worker `w` is shifted by
/// `w / workers` of one slot), so the process as a whole spreads its
/// reconnects evenly over the window instead of every worker picking the
/// same instants.
fn offset(drain_ms: u64, i: u64, n: u64, w: u64, workers: u64) -> u64 {
    drain_ms * (i * workers + w.min(workers - 1)) / (n.max(1) * workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_delays_of_two_workers_interleave_over_the_window() {
        let n = 100;
        let mut all: Vec<u64> = (0..2)
            .flat_map(|w| (0..n).map(move |i| offset(1_000, i, n, w, 2)))
            .collect();
        assert!(all.iter().all(|&d| d < 1_000));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 200, "every session its own instant");
        assert_eq!(offset(1_000, 0, n, 0, 2), 0);
        assert_eq!(offset(1_000, 0, n, 1, 2), 5);
    }
}
