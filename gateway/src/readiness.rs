//! Readiness: a gateway started with a logic server accepts no client
//! until its link is up (the first `Pong`, see [`crate::liveness`]) or
//! until the start-up grace (`link_grace_ms`, default 2,000) has passed,
//! whichever comes first. After that rule 13 applies as ever: while the
//! link is down, requests are answered UNAVAILABLE.
//!
//! The listening sockets are bound from the start, so a client that comes
//! early waits in the kernel's listen backlog (its connect succeeds, its
//! frames are buffered) and is served as soon as the gate opens; the
//! worker threads start their loops only then.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// A gate that opens once, for good.
#[derive(Debug, Default)]
pub struct Readiness {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Readiness {
    /// Opens the gate (the link is up).
    pub fn open(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !*open {
            *open = true;
            self.cv.notify_all();
        }
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the gate opens or `until` passes; true if it opened.
    pub fn wait(&self, until: Instant) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            open = self
                .cv
                .wait_timeout(open, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_wait_ends_when_the_gate_opens_or_at_the_grace() {
        let gate = Arc::new(Readiness::default());
        let t0 = Instant::now();
        assert!(!gate.wait(t0 + Duration::from_millis(20)));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        let g = gate.clone();
        let opener = std::thread::spawn(move || g.open());
        // Opened by the other thread: the wait returns long before an hour.
        assert!(gate.wait(Instant::now() + Duration::from_secs(3600)));
        opener.join().unwrap();
        assert!(gate.is_open());
        assert!(gate.wait(Instant::now()), "open for good");
    }
}
