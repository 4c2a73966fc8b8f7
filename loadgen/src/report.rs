//! The end-of-run report: one serde struct, printed as a human table and
//! written as JSON (`--json FILE`). Every figure says what it measures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Hist;

/// Percentiles of one histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pct {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl From<&Hist> for Pct {
    fn from(h: &Hist) -> Pct {
        Pct {
            count: h.len(),
            p50: h.q(0.5),
            p90: h.q(0.9),
            p99: h.q(0.99),
            p999: h.q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// One sample of the time series behind the chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    pub sessions_up: u64,
    /// Sum of the gateways' VmRSS, KiB.
    pub gateway_rss_kib: u64,
    /// Sum of the load generator workers' VmRSS, KiB.
    pub loadgen_rss_kib: u64,
    /// Machine-wide kernel slab, KiB.
    pub slab_kib: u64,
}

/// The storm phase: one gateway drained, everyone back elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormReport {
    pub drained_pid: u32,
    pub goaways: u64,
    pub relogins: u64,
    /// SIGTERM to the last re-login, ms (max of `relogin_ms`).
    pub all_back_ms: u64,
    /// Re-login times after SIGTERM, ms: their spread.
    pub relogin_ms: Pct,
    /// The `reconnect_after_ms` values the gateway sent.
    pub goaway_after_ms: Pct,
    /// Sessions up when the storm phase ended.
    pub up_after: u64,
    pub complete: bool,
}

/// The chat phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatReport {
    /// `pairs` or `rooms:R`.
    pub mode: String,
    pub rate_per_s: f64,
    pub payload_bytes: usize,
    pub duration_s: f64,
    pub sent: u64,
    /// SEND_ACK OK.
    pub acked: u64,
    /// SENDs with no answer at all (neither an ACK nor an error) when the
    /// drain ended.
    #[serde(default)]
    pub unanswered: u64,
    pub errors: BTreeMap<String, u64>,
    /// PUSHes the receivers should have got: one per acked message in
    /// pairs mode; each room's last id times its members in rooms mode.
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// `expected` minus distinct messages received.
    pub lost: u64,
    /// Send time in the body to PUSH read, µs.
    pub e2e_us: Pct,
    /// Pipelined window per sender (0: paced at `rate_per_s`).
    #[serde(default)]
    pub window: u32,
    /// Sessions that sent (0: all).
    #[serde(default)]
    pub senders: u64,
    /// SEND_ACK OK per second of the sending period.
    #[serde(default)]
    pub acked_per_s: f64,
    /// Distinct PUSHes received per second of the sending period.
    #[serde(default)]
    pub delivered_per_s: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub sessions_target: u64,
    pub workers: u64,
    pub source_addresses: u64,
    pub logged_in: u64,
    pub failed: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Wall time from the first connect to the last LOGIN_ACK of the ramp.
    pub ramp_s: f64,
    /// `logged_in / ramp_s`.
    pub login_rate_per_s: f64,
    /// `connect()` to LOGIN handed to the socket, µs (about 0 on loopback,
    /// where the handshake completes inside `connect()`).
    pub connect_us: Pct,
    /// LOGIN written to LOGIN_ACK read, µs.
    pub login_us: Pct,
    /// HEARTBEAT to HEARTBEAT_ACK, µs.
    pub heartbeat_rtt_us: Pct,
    pub hold_s: f64,
    /// Sessions logged in at the end of the hold.
    pub held_at_end: u64,
    /// Logged-in sessions the server ended, any time.
    pub lost: u64,
    pub lost_by_reason: BTreeMap<String, u64>,
    pub heartbeats_sent: u64,
    pub heartbeats_acked: u64,
    /// The steady window over which gateway CPU per heartbeat is taken.
    pub hb_window_s: f64,
    pub hb_window_acked: u64,
    pub gateway_cpu_us_in_window: Option<u64>,
    pub gateway_cpu_us_per_heartbeat: Option<f64>,
    pub gateway_rss_before_kib: Option<u64>,
    pub gateway_rss_after_kib: Option<u64>,
    /// (Σ gateway VmRSS after login − before) / sessions logged in.
    pub gateway_bytes_per_session: Option<f64>,
    pub slab_before_kib: u64,
    pub slab_after_kib: u64,
    /// Slab growth over 2 × sessions (both ends of each loopback session).
    pub kernel_bytes_per_socket: Option<f64>,
    pub loadgen_peak_rss_kib: u64,
    pub storm: Option<StormReport>,
    pub chat: Option<ChatReport>,
    /// Things the reader must know: skipped phases, interruptions, limits.
    pub notes: Vec<String>,
    pub series: Vec<Sample>,
}

fn pct_row(out: &mut String, name: &str, unit: &str, p: &Pct) {
    let _ = writeln!(
        out,
        "  {name:<24} n={:<9} p50={}{unit} p90={}{unit} p99={}{unit} p99.9={}{unit} max={}{unit}",
        p.count, p.p50, p.p90, p.p99, p.p999, p.max
    );
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "not measured".to_string(), |v| v.to_string())
}

impl Report {
    /// The human table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "== loadgen report ==");
        let _ = writeln!(
            o,
            "  sessions                 target={} logged_in={} failed={} (workers={}, source addresses={})",
            self.sessions_target, self.logged_in, self.failed, self.workers, self.source_addresses
        );
        for (k, v) in &self.failed_by_reason {
            let _ = writeln!(o, "    failed: {k}: {v}");
        }
        let _ = writeln!(
            o,
            "  connect+login rate       {:.0} sessions/s (ramp {:.2} s)",
            self.login_rate_per_s, self.ramp_s
        );
        pct_row(&mut o, "connect latency", "us", &self.connect_us);
        pct_row(&mut o, "login latency", "us", &self.login_us);
        let _ = writeln!(
            o,
            "  held at end of hold      {} of {} after {:.1} s; lost={}",
            self.held_at_end, self.sessions_target, self.hold_s, self.lost
        );
        for (k, v) in &self.lost_by_reason {
            let _ = writeln!(o, "    lost: {k}: {v}");
        }
        let _ = writeln!(
            o,
            "  heartbeats               sent={} acked={}",
            self.heartbeats_sent, self.heartbeats_acked
        );
        pct_row(&mut o, "heartbeat rtt", "us", &self.heartbeat_rtt_us);
        let _ = writeln!(
            o,
            "  gateway cpu/heartbeat    {} ({} acks over {:.1} s, cpu {})",
            opt(self
                .gateway_cpu_us_per_heartbeat
                .map(|v| format!("{v:.2} us"))),
            self.hb_window_acked,
            self.hb_window_s,
            opt(self.gateway_cpu_us_in_window.map(|v| format!("{v} us")))
        );
        let _ = writeln!(
            o,
            "  gateway bytes/session    {} (RSS {} -> {})",
            opt(self.gateway_bytes_per_session.map(|v| format!("{v:.1}"))),
            opt(self.gateway_rss_before_kib.map(|v| format!("{v} KiB"))),
            opt(self.gateway_rss_after_kib.map(|v| format!("{v} KiB")))
        );
        let _ = writeln!(
            o,
            "  kernel bytes/socket      {} (slab {} -> {} KiB)",
            opt(self.kernel_bytes_per_socket.map(|v| format!("{v:.0}"))),
            self.slab_before_kib,
            self.slab_after_kib
        );
        let _ = writeln!(
            o,
            "  loadgen peak RSS         {} KiB (all workers)",
            self.loadgen_peak_rss_kib
        );
        if let Some(s) = &self.storm {
            let _ = writeln!(
                o,
                "  storm                    drained pid {}: goaways={} relogins={} all back in {} ms ({}); up after={}",
                s.drained_pid,
                s.goaways,
                s.relogins,
                s.all_back_ms,
                if s.complete { "complete" } else { "INCOMPLETE" },
                s.up_after
            );
            pct_row(&mut o, "re-login after SIGTERM", "ms", &s.relogin_ms);
            pct_row(&mut o, "GOAWAY reconnect_after", "ms", &s.goaway_after_ms);
        }
        if let Some(c) = &self.chat {
            let _ = writeln!(
                o,
                "  chat                     {} at {:.0}/s, {} B, {:.1} s: sent={} acked={} unanswered={} expected={} received={} lost={} dup={} out-of-order={}",
                c.mode,
                c.rate_per_s,
                c.payload_bytes,
                c.duration_s,
                c.sent,
                c.acked,
                c.unanswered,
                c.expected,
                c.received,
                c.lost,
                c.duplicates,
                c.out_of_order
            );
            let _ = writeln!(
                o,
                "  chat throughput          {:.0} acked/s, {:.0} delivered/s{}",
                c.acked_per_s,
                c.delivered_per_s,
                if c.window > 0 {
                    format!(" (window {} per sender)", c.window)
                } else {
                    String::new()
                }
            );
            for (k, v) in &c.errors {
                let _ = writeln!(o, "    chat error: {k}: {v}");
            }
            pct_row(&mut o, "chat end-to-end", "us", &c.e2e_us);
        }
        for n in &self.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_what_was_and_was_not_measured() {
        let mut r = Report {
            sessions_target: 10,
            logged_in: 9,
            failed: 1,
            ..Report::default()
        };
        r.failed_by_reason.insert("connect ECONNREFUSED".into(), 1);
        r.notes.push("chat skipped".into());
        let t = r.table();
        assert!(t.contains("target=10 logged_in=9 failed=1"));
        assert!(t.contains("failed: connect ECONNREFUSED: 1"));
        assert!(t.contains("gateway bytes/session    not measured"));
        assert!(t.contains("note: chat skipped"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = Hist::default();
        for v in 1..=100 {
            h.record(v);
        }
        let p = Pct::from(&h);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50, 99, 100));
    }
}
