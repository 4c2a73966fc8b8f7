//! Counters and the Prometheus text endpoint.
//!
//! Each worker owns one [`WorkerStats`] and is the only thread that writes
//! it: a counter bump is a relaxed load and store (a plain `add` on x86, no
//! locked instruction, no cache line shared with another worker on the
//! frame path). The metrics thread only reads, summing over workers when
//! `/metrics` is scraped.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::session::{CLOSE_REASONS, CloseReason, LoginFailure};

/// A counter written by one thread and read by others.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Subtracts one (for gauges). Only the owning worker calls this.
    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(1), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One worker's counters, padded to its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    pub connections_open: Counter,
    pub sessions_open: Counter,
    pub accepted: Counter,
    pub logins_ok: Counter,
    pub logins_failed: [Counter; LoginFailure::ALL.len()],
    pub heartbeats: Counter,
    pub expiries: Counter,
    pub closes: [Counter; CLOSE_REASONS.len()],
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub forwarded: Counter,
    pub delivered: Counter,
    /// Requests answered UNAVAILABLE because the queue to the uplink was
    /// full.
    pub bounced_full: Counter,
    /// Server frames over the client's max body, dropped.
    pub oversize_dropped: Counter,
    /// Connections refused at the open-file limit.
    pub refused_fd_limit: Counter,
}

impl WorkerStats {
    pub fn login_failed(&self, f: LoginFailure) {
        let i = LoginFailure::ALL.iter().position(|x| *x == f).unwrap_or(0);
        self.logins_failed[i].inc();
    }

    pub fn closed(&self, r: CloseReason) {
        self.closes[r.index()].inc();
    }
}

fn sum(all: &[Arc<WorkerStats>], f: impl Fn(&WorkerStats) -> u64) -> u64 {
    all.iter().map(|s| f(s)).sum()
}

/// The uplink's link state and counters (one uplink per process).
#[derive(Debug, Default)]
pub struct UplinkStats {
    /// The link is up (its first `Pong` came back).
    pub connected: AtomicBool,
    /// Requests answered UNAVAILABLE at their deadline.
    pub requests_expired: AtomicU64,
    /// Answers that came after their request's deadline (dropped).
    pub late_answers: AtomicU64,
    /// Links declared dead after missed pongs.
    pub links_dead: AtomicU64,
}

impl UplinkStats {
    /// The uplink's lines of the exposition (after [`render`]'s).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "millgate_uplink_requests_expired_total",
                "Requests to the logic tier answered UNAVAILABLE at their deadline.",
                &self.requests_expired,
            ),
            (
                "millgate_uplink_late_answers_total",
                "Answers from the logic tier dropped: their request had reached its deadline.",
                &self.late_answers,
            ),
            (
                "millgate_uplink_links_dead_total",
                "Links to the logic tier closed after missed pongs.",
                &self.links_dead,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        out
    }
}

/// Renders Prometheus text exposition format.
pub fn render(all: &[Arc<WorkerStats>], uplink_connected: bool) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        "millgate_connections_open",
        "gauge",
        "Client connections held.",
        sum(all, |s| s.connections_open.get()),
    );
    one(
        "millgate_sessions_open",
        "gauge",
        "Logged-in sessions held.",
        sum(all, |s| s.sessions_open.get()),
    );
    one(
        "millgate_accepted_total",
        "counter",
        "Connections accepted.",
        sum(all, |s| s.accepted.get()),
    );
    one(
        "millgate_logins_ok_total",
        "counter",
        "Successful logins.",
        sum(all, |s| s.logins_ok.get()),
    );
    one(
        "millgate_heartbeats_total",
        "counter",
        "Heartbeats answered.",
        sum(all, |s| s.heartbeats.get()),
    );
    one(
        "millgate_expiries_total",
        "counter",
        "Sessions closed by idle expiry.",
        sum(all, |s| s.expiries.get()),
    );
    one(
        "millgate_frames_in_total",
        "counter",
        "Client frames received.",
        sum(all, |s| s.frames_in.get()),
    );
    one(
        "millgate_frames_out_total",
        "counter",
        "Frames sent to clients.",
        sum(all, |s| s.frames_out.get()),
    );
    one(
        "millgate_bytes_in_total",
        "counter",
        "Bytes received from clients.",
        sum(all, |s| s.bytes_in.get()),
    );
    one(
        "millgate_bytes_out_total",
        "counter",
        "Bytes sent to clients.",
        sum(all, |s| s.bytes_out.get()),
    );
    one(
        "millgate_forwarded_total",
        "counter",
        "Client frames forwarded to the logic tier.",
        sum(all, |s| s.forwarded.get()),
    );
    one(
        "millgate_delivered_total",
        "counter",
        "Frames from the logic tier written to sessions.",
        sum(all, |s| s.delivered.get()),
    );
    one(
        "millgate_uplink_full_unavailable_total",
        "counter",
        "Requests answered UNAVAILABLE because the queue to the uplink was full.",
        sum(all, |s| s.bounced_full.get()),
    );
    one(
        "millgate_oversize_dropped_total",
        "counter",
        "Frames from the logic tier over the client max body, dropped.",
        sum(all, |s| s.oversize_dropped.get()),
    );
    one(
        "millgate_refused_fd_limit_total",
        "counter",
        "Connections refused at the open-file limit (spare descriptor).",
        sum(all, |s| s.refused_fd_limit.get()),
    );
    one(
        "millgate_uplink_connected",
        "gauge",
        "1 while the logic server is connected.",
        u64::from(uplink_connected),
    );
    let _ = writeln!(
        out,
        "# HELP millgate_worker_sessions_open Logged-in sessions held, by worker thread.\n# TYPE millgate_worker_sessions_open gauge"
    );
    for (i, s) in all.iter().enumerate() {
        let _ = writeln!(
            out,
            "millgate_worker_sessions_open{{worker=\"{i}\"}} {}",
            s.sessions_open.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP millgate_logins_failed_total Refused logins by reason.\n# TYPE millgate_logins_failed_total counter"
    );
    for (i, f) in LoginFailure::ALL.iter().enumerate() {
        let v = sum(all, |s| s.logins_failed[i].get());
        let _ = writeln!(
            out,
            "millgate_logins_failed_total{{reason=\"{}\"}} {v}",
            f.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP millgate_closes_total Connections closed by reason.\n# TYPE millgate_closes_total counter"
    );
    for (i, (_, label)) in CLOSE_REASONS.iter().enumerate() {
        let v = sum(all, |s| s.closes[i].get());
        let _ = writeln!(out, "millgate_closes_total{{reason=\"{label}\"}} {v}");
    }
    out
}

/// Serves `GET /metrics` on `listener` forever, one request per
/// connection, from a thread of its own. `render` produces the body.
pub fn serve(listener: TcpListener, render: impl Fn() -> String + Send + 'static) {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &render);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!("metrics thread: {e}"));
}

fn answer(mut stream: TcpStream, render: &impl Fn() -> String) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") {
        ("200 OK", render())
    } else {
        ("404 Not Found", String::from("not found\n"))
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Binds the metrics listener (so a bad address fails start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_workers_by_label() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.sessions_open.inc();
        b.sessions_open.inc();
        b.sessions_open.inc();
        b.sessions_open.dec();
        a.login_failed(LoginFailure::Expired);
        b.closed(CloseReason::IdleTimeout);
        for (i, (r, label)) in CLOSE_REASONS.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            assert_eq!(r.as_str(), *label);
        }
        for f in LoginFailure::ALL {
            assert_eq!(CloseReason::Unauthenticated(f).as_str(), "unauthenticated");
        }
        let text = render(&[a, b], false);
        assert!(text.contains("\nmillgate_sessions_open 2\n"), "{text}");
        assert!(text.contains("\nmillgate_worker_sessions_open{worker=\"0\"} 1\n"));
        assert!(text.contains("\nmillgate_worker_sessions_open{worker=\"1\"} 1\n"));
        assert!(text.contains("millgate_logins_failed_total{reason=\"expired\"} 1"));
        assert!(text.contains("millgate_closes_total{reason=\"idle_timeout\"} 1"));
        assert!(text.contains("millgate_closes_total{reason=\"drain\"} 0"));
    }
}
