//! Counters and the `/metrics` endpoint (Prometheus text format 0.0.4).
//!
//! Each shard publishes its own counters into its own [`ShardStats`]
//! (relaxed atomic stores once per turn, no sharing on the message path);
//! a scrape sums them. The HTTP server is a tiny hand-written one on a std
//! thread: it answers `GET /metrics` and 404 to everything else.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::shard::Shard;

/// One shard's published numbers.
#[derive(Debug, Default)]
pub struct ShardStats {
    sessions: AtomicU64,
    retained: AtomicU64,
    stored: AtomicU64,
    pushes: AtomicU64,
    duplicates: AtomicU64,
    syncs: AtomicU64,
}

impl ShardStats {
    /// Copies the shard's current numbers (called by its own thread).
    pub fn publish(&self, shard: &Shard) {
        let c = shard.counters();
        self.sessions.store(shard.sessions() as u64, Relaxed);
        self.retained.store(shard.retained() as u64, Relaxed);
        self.stored.store(c.stored, Relaxed);
        self.pushes.store(c.pushes, Relaxed);
        self.duplicates.store(c.duplicates, Relaxed);
        self.syncs.store(c.syncs, Relaxed);
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub shards: Vec<Arc<ShardStats>>,
    /// Gateways with at least one link connection.
    pub gateways: AtomicU64,
    /// Open link connections.
    pub links: AtomicU64,
    /// Link frames received from gateways.
    pub link_frames_in: AtomicU64,
    /// Links refused because another gateway process holds their id.
    pub gateway_id_conflicts: AtomicU64,
}

impl Stats {
    /// Stats for `shards` shards.
    pub fn new(shards: usize) -> Stats {
        Stats {
            shards: (0..shards).map(|_| Arc::default()).collect(),
            ..Stats::default()
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let sum = |f: fn(&ShardStats) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
        };
        let rows: [(&str, &str, &str, u64); 10] = [
            (
                "logic_sessions_routed",
                "gauge",
                "Sessions in the router.",
                sum(|s| &s.sessions),
            ),
            (
                "logic_messages_retained",
                "gauge",
                "Messages held by the stores.",
                sum(|s| &s.retained),
            ),
            (
                "logic_messages_stored_total",
                "counter",
                "Messages stored (SEND answered OK).",
                sum(|s| &s.stored),
            ),
            (
                "logic_pushes_sent_total",
                "counter",
                "PUSH deliveries addressed to sessions (live and SYNC).",
                sum(|s| &s.pushes),
            ),
            (
                "logic_duplicates_total",
                "counter",
                "SENDs answered DUPLICATE.",
                sum(|s| &s.duplicates),
            ),
            (
                "logic_sync_requests_total",
                "counter",
                "SYNC requests handled.",
                sum(|s| &s.syncs),
            ),
            (
                "logic_gateways",
                "gauge",
                "Gateways with a live link.",
                self.gateways.load(Relaxed),
            ),
            (
                "logic_link_connections",
                "gauge",
                "Open link connections.",
                self.links.load(Relaxed),
            ),
            (
                "logic_link_frames_received_total",
                "counter",
                "Link frames received.",
                self.link_frames_in.load(Relaxed),
            ),
            (
                "logic_gateway_id_conflicts_total",
                "counter",
                "Links refused: their Hello claimed a gateway id linked by another instance.",
                self.gateway_id_conflicts.load(Relaxed),
            ),
        ];
        let mut s = String::new();
        for (name, kind, help, v) in rows {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        }
        s
    }
}

/// Serves `/metrics` from `listener` on a detached thread.
pub fn serve(listener: TcpListener, stats: Arc<Stats>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // One scrape at a time is plenty; a stuck client times out.
                let _ = answer(stream, &stats);
            }
        })?;
    Ok(())
}

fn answer(mut stream: TcpStream, stats: &Stats) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics?") {
        ("200 OK", stats.render())
    } else {
        ("404 Not Found", String::from("not found\n"))
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_shards() {
        let stats = Stats::new(2);
        stats.shards[0].stored.store(3, Relaxed);
        stats.shards[1].stored.store(4, Relaxed);
        let text = stats.render();
        assert!(text.contains("\nlogic_messages_stored_total 7\n"), "{text}");
        assert!(text.contains("# TYPE logic_sessions_routed gauge\n"));
    }
}
