//! The logic nodes a gateway may link to (`--logic A,B,C`) and which one
//! to dial next, sans-io: time is an argument.
//!
//! The gateway holds one link at a time, to its current node: the node
//! its sessions are announced to and deliveries come from, so a PUSH
//! reaches a session once however many nodes there are. Nodes sharing one
//! state (issue 14's Redis mode) serve any request, so when the current
//! node's link ends, or its dial fails, the next node in the list is
//! dialled at once; the workers re-announce every session on the new link
//! (`Reopen`), and no client reconnects. Only after every node has failed
//! in a row does the uplink wait, by the [`Backoff`]; a link counts as a
//! success only once it has been up for [`HEALTHY_AFTER_MS`], so nodes
//! that accept and drop cannot make a hot loop. Gateways start at
//! different nodes (by gateway id), which spreads them over the tier.

use std::net::SocketAddr;

use crate::liveness::{Backoff, HEALTHY_AFTER_MS};

/// The node list and the dial policy across it (see the module doc).
#[derive(Debug)]
pub struct Nodes {
    addrs: Vec<SocketAddr>,
    current: usize,
    /// Dials and links that failed since the last healthy link.
    failures: usize,
    backoff: Backoff,
}

impl Nodes {
    /// `addrs` (at least one) starting at `start % addrs.len()`.
    pub fn new(addrs: Vec<SocketAddr>, start: u64, backoff: Backoff) -> Nodes {
        assert!(!addrs.is_empty(), "at least one logic node");
        let current = (start % addrs.len() as u64) as usize;
        Nodes {
            addrs,
            current,
            failures: 0,
            backoff,
        }
    }

    /// The node to dial, or linked.
    pub fn current(&self) -> SocketAddr {
        self.addrs[self.current]
    }

    /// The dial of the current node failed at `now`: the wait (ms) before
    /// dialling the next.
    pub fn dial_failed(&mut self, now: u64) -> u64 {
        if self.advance() {
            self.backoff.dial_failed(now)
        } else {
            0
        }
    }

    /// The current node's link ended at `now`, having been up since
    /// `up_since` (if ever): the wait (ms) before dialling the next.
    pub fn link_ended(&mut self, now: u64, up_since: Option<u64>) -> u64 {
        self.backoff.link_was(now, up_since);
        if up_since.is_some_and(|t| now.saturating_sub(t) >= HEALTHY_AFTER_MS) {
            self.failures = 0;
        }
        if self.advance() {
            self.backoff.step()
        } else {
            0
        }
    }

    /// Moves to the next node after a failure; true when every node has
    /// now failed in a row (a round is over: back off).
    fn advance(&mut self) -> bool {
        self.failures += 1;
        self.current = (self.current + 1) % self.addrs.len();
        self.failures.is_multiple_of(self.addrs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::BACKOFF_MIN_MS;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn one_node_backs_off_as_before() {
        let mut n = Nodes::new(addrs(1), 7, Backoff::new(0));
        assert_eq!(n.current().port(), 1);
        assert_eq!(n.dial_failed(1_000), BACKOFF_MIN_MS);
        assert_eq!(n.dial_failed(1_100), 2 * BACKOFF_MIN_MS);
        assert_eq!(n.current().port(), 1);
    }

    #[test]
    fn a_failed_node_is_followed_by_the_next_at_once_and_a_failed_round_backs_off() {
        let mut n = Nodes::new(addrs(3), 1, Backoff::new(0));
        assert_eq!(n.current().port(), 2, "starts at start % 3");
        assert_eq!(n.dial_failed(1_000), 0);
        assert_eq!(n.current().port(), 3);
        assert_eq!(n.dial_failed(1_000), 0);
        assert_eq!(n.current().port(), 1);
        assert_eq!(n.dial_failed(1_000), BACKOFF_MIN_MS, "all three failed");
        assert_eq!(n.current().port(), 2);
        assert_eq!(n.dial_failed(1_100), 0);
        assert_eq!(n.dial_failed(1_100), 0);
        assert_eq!(n.dial_failed(1_100), 2 * BACKOFF_MIN_MS, "rounds back off");
    }

    #[test]
    fn a_healthy_link_that_ends_moves_to_the_next_node_at_once() {
        let mut n = Nodes::new(addrs(2), 0, Backoff::new(0));
        let up = 1_000;
        let end = up + HEALTHY_AFTER_MS;
        assert_eq!(n.link_ended(end, Some(up)), 0);
        assert_eq!(n.current().port(), 2);
        // The other node is down too: the round is over.
        assert_eq!(n.dial_failed(end), BACKOFF_MIN_MS);
        assert_eq!(n.current().port(), 1);
    }

    #[test]
    fn links_that_drop_soon_after_coming_up_cannot_make_a_hot_loop() {
        let mut n = Nodes::new(addrs(2), 0, Backoff::new(0));
        let mut waits = Vec::new();
        let mut t = 0;
        for _ in 0..6 {
            let w = n.link_ended(t + 10, Some(t));
            waits.push(w);
            t += 10 + w;
        }
        assert_eq!(
            waits,
            [
                0,
                BACKOFF_MIN_MS,
                0,
                2 * BACKOFF_MIN_MS,
                0,
                4 * BACKOFF_MIN_MS
            ]
        );
    }
}
