//! The uplink's link policy, sans-io: when to ping the logic server, when
//! a link is up and when it is dead ([`Liveness`]), and how long to wait
//! before dialling again ([`Backoff`]). Time is ms on any monotonic clock,
//! passed in.
//!
//! - **Up.** A new link sends `Hello` and a `Ping` in one write; the link
//!   is *up* (workers told `LinkUp`, sessions re-announced, the gateway
//!   ready for clients) when the first `Pong` comes back, so a logic
//!   server that refuses the `Hello`, or accepts the connection and never
//!   reads it (SIGSTOP), is never taken for up.
//! - **Pings.** Every `ping_interval_ms` (default 1,000) while connected.
//! - **Dead.** When nothing at all (a `Pong` or any other frame) has come
//!   back for `missed_pongs` x `ping_interval_ms` (default 3 x 1,000 ms),
//!   the link is dead: closed, its requests answered UNAVAILABLE, and
//!   dialled again after the backoff.
//! - **Backoff.** 50 ms doubling to 5 s between dials. It starts again at
//!   50 ms only after a link that had been up for [`HEALTHY_AFTER_MS`]
//!   ends: a peer that accepts and then drops or stalls every link (a
//!   version or gateway-id refusal, a stopped process) is dialled ever
//!   more slowly, never in a hot loop. Until the first link is up, and
//!   while the start-up grace lasts, a refused dial is retried every
//!   [`STARTUP_RETRY_MS`] at most, so a gateway started just before its
//!   logic server links within the grace. With several logic nodes the
//!   backoff is taken once per round over all of them (`nodes.rs`).

/// Shortest and longest wait between dials.
pub const BACKOFF_MIN_MS: u64 = 50;
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// A link up this long was healthy: the backoff starts again from the
/// minimum when it ends.
pub const HEALTHY_AFTER_MS: u64 = 10_000;
/// Longest wait between refused dials before the first link, within the
/// start-up grace.
pub const STARTUP_RETRY_MS: u64 = 100;

/// What the uplink should do now about the link's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Quiet,
    /// Send a `Ping` with this nonce.
    Ping(u64),
    /// Nothing heard for too long: close the link.
    Dead,
}

/// Liveness of one link connection.
#[derive(Debug)]
pub struct Liveness {
    interval_ms: u64,
    dead_after_ms: u64,
    heard_ms: u64,
    next_ping_ms: u64,
    nonce: u64,
    up_since: Option<u64>,
}

impl Liveness {
    pub fn new(ping_interval_ms: u64, missed_pongs: u32) -> Liveness {
        let interval_ms = ping_interval_ms.max(1);
        Liveness {
            interval_ms,
            dead_after_ms: interval_ms.saturating_mul(u64::from(missed_pongs.max(1))),
            heard_ms: 0,
            next_ping_ms: u64::MAX,
            nonce: 0,
            up_since: None,
        }
    }

    /// A link connected at `now`: returns the nonce of the `Ping` to send
    /// with the `Hello`.
    pub fn connected(&mut self, now: u64) -> u64 {
        self.heard_ms = now;
        self.next_ping_ms = now.saturating_add(self.interval_ms);
        self.up_since = None;
        self.nonce += 1;
        self.nonce
    }

    /// A frame came in at `now`; true when it is the `Pong` that makes the
    /// link up.
    pub fn heard(&mut self, now: u64, pong: bool) -> bool {
        self.heard_ms = self.heard_ms.max(now);
        if pong && self.up_since.is_none() {
            self.up_since = Some(now);
            return true;
        }
        false
    }

    /// Since when the link has been up, if it is.
    pub fn up_since(&self) -> Option<u64> {
        self.up_since
    }

    /// What is due at `now`.
    pub fn tick(&mut self, now: u64) -> Tick {
        if now >= self.heard_ms.saturating_add(self.dead_after_ms) {
            return Tick::Dead;
        }
        if now >= self.next_ping_ms {
            self.next_ping_ms = now.saturating_add(self.interval_ms);
            self.nonce += 1;
            return Tick::Ping(self.nonce);
        }
        Tick::Quiet
    }

    /// When [`Liveness::tick`] next has something to say.
    pub fn next_due(&self) -> u64 {
        self.next_ping_ms
            .min(self.heard_ms.saturating_add(self.dead_after_ms))
    }
}

/// The wait between dials.
#[derive(Debug)]
pub struct Backoff {
    next_ms: u64,
    /// Until when (ms) refused dials are retried quickly: the start-up
    /// grace, over once a link has been up.
    fast_until_ms: u64,
}

impl Backoff {
    /// A fresh backoff; `grace_until_ms` ends the start-up fast retries.
    pub fn new(grace_until_ms: u64) -> Backoff {
        Backoff {
            next_ms: BACKOFF_MIN_MS,
            fast_until_ms: grace_until_ms,
        }
    }

    /// A dial was refused (or timed out) at `now`: the wait before the next.
    pub fn dial_failed(&mut self, now: u64) -> u64 {
        let wait = self.step();
        if now < self.fast_until_ms {
            wait.min(STARTUP_RETRY_MS)
        } else {
            wait
        }
    }

    /// A link ended at `now`, having been up since `up_since` (if ever):
    /// the wait before the next dial.
    pub fn link_ended(&mut self, now: u64, up_since: Option<u64>) -> u64 {
        self.link_was(now, up_since);
        self.step()
    }

    /// Notes a link that ended at `now`, up since `up_since` (if ever),
    /// without taking a wait: a healthy one resets the backoff.
    pub fn link_was(&mut self, now: u64, up_since: Option<u64>) {
        if let Some(t) = up_since {
            self.fast_until_ms = 0;
            if now.saturating_sub(t) >= HEALTHY_AFTER_MS {
                self.next_ms = BACKOFF_MIN_MS;
            }
        }
    }

    /// The next wait, doubling the one after it.
    pub fn step(&mut self) -> u64 {
        let wait = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(BACKOFF_MAX_MS);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_every_interval_and_is_up_at_the_first_pong() {
        let mut l = Liveness::new(1_000, 3);
        let first = l.connected(0);
        assert_eq!(l.up_since(), None);
        assert_eq!(l.tick(999), Tick::Quiet);
        assert_eq!(l.next_due(), 1_000);
        assert_eq!(l.tick(1_000), Tick::Ping(first + 1));
        assert_eq!(l.tick(1_500), Tick::Quiet);
        // Any frame is a sign of life, but only a Pong makes the link up.
        assert!(!l.heard(1_600, false));
        assert_eq!(l.up_since(), None);
        assert!(l.heard(1_700, true));
        assert!(!l.heard(1_800, true), "up once");
        assert_eq!(l.up_since(), Some(1_700));
        assert_eq!(l.tick(2_000), Tick::Ping(first + 2));
    }

    #[test]
    fn dead_after_the_missed_pongs_whatever_is_sent() {
        let mut l = Liveness::new(1_000, 3);
        l.connected(10_000);
        assert!(l.heard(10_005, true));
        let mut pings = 0;
        let mut t = 10_005;
        loop {
            t += 100;
            match l.tick(t) {
                Tick::Ping(_) => pings += 1,
                Tick::Quiet => {}
                Tick::Dead => break,
            }
        }
        // Heard at 10,005; dead 3 intervals later, after 3 pings unanswered.
        assert_eq!(t, 13_005);
        assert_eq!(pings, 2, "pings at 11,005 and 12,005, both unanswered");
        assert_eq!(l.next_due(), 13_005);
    }

    #[test]
    fn a_link_that_never_answers_is_dead_after_the_same_time() {
        let mut l = Liveness::new(200, 3);
        l.connected(0);
        assert_eq!(l.tick(599), Tick::Ping(2));
        assert_eq!(l.tick(600), Tick::Dead);
        // A new connection starts afresh.
        l.connected(1_000);
        assert_eq!(l.up_since(), None);
        assert_eq!(l.tick(1_100), Tick::Quiet);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_only_after_a_healthy_link() {
        let mut b = Backoff::new(0);
        let waits: Vec<u64> = (0..9).map(|_| b.dial_failed(0)).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        // Up for a moment only (a peer that drops every link): no reset.
        assert_eq!(b.link_ended(20_000, Some(19_000)), 5_000);
        // Never up (refused the Hello, stopped): no reset either.
        assert_eq!(b.link_ended(30_000, None), 5_000);
        // Healthy for 10 s: the next dial is soon.
        assert_eq!(b.link_ended(50_000, Some(40_000)), 50);
        assert_eq!(b.link_ended(50_100, Some(50_060)), 100);
    }

    #[test]
    fn refused_dials_are_retried_quickly_during_the_startup_grace_only() {
        let mut b = Backoff::new(2_000);
        let waits: Vec<u64> = (0..5).map(|i| b.dial_failed(i * 100)).collect();
        assert_eq!(waits, [50, 100, 100, 100, 100]);
        assert_eq!(b.dial_failed(2_000), 1_600);
        // A link that was up ends the start-up regime for good.
        let mut b = Backoff::new(60_000);
        b.link_ended(100, Some(50));
        for _ in 0..5 {
            b.dial_failed(200);
        }
        assert_eq!(b.dial_failed(300), 3_200);
    }
}
