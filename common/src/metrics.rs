//! Prometheus metrics on `prometheus-client` (the official Rust client),
//! with the hot path kept free of locked instructions.
//!
//! - [`Metrics`]: one per binary. Its registry prefixes every name with
//!   `millgate_<tier>_` (`millgate_gateway_sessions_open`); the standard
//!   `process_*` metrics (RSS, CPU seconds, open and max fds, threads,
//!   start time, read from `/proc/self` at scrape time) are added unprefixed,
//!   as every exporter names them and dashboards expect. [`Metrics::encode`]
//!   writes the Prometheus text format 0.0.4 (what `promtool check metrics`
//!   reads) or OpenMetrics 1.0 (what a Prometheus server asks for first).
//! - [`LocalCounter`]: a counter written by one thread only: an increment
//!   is a relaxed load and a relaxed store, a plain `add` on x86 with no
//!   locked instruction and no cache line bouncing between cores.
//! - [`LocalHistogram`]: a histogram written by one thread only, fixed
//!   integer [`Buckets`]: an observation is a binary search over the
//!   bounds and two relaxed load+store pairs.
//! - [`PerThread`]: a collector that sums many threads' counters, gauges
//!   and histograms at scrape time, so the writers never share anything.
//!
//! Why not prometheus-client's own `Counter` and `Histogram` on the hot
//! path: `Counter::inc` is an atomic `fetch_add` (a `lock xadd`), and
//! `Histogram::observe` takes a `parking_lot::Mutex` around the bucket
//! search; nor can per-thread library histograms be summed into one
//! metric, as the library gives no read access to their buckets. Measured
//! with `cargo bench -p millgate-common --bench hot_metrics` (criterion
//! medians of two runs on this 2-core machine while other builds ran, load
//! average 4 to 6: noisy, ratios more telling than figures):
//!
//! | operation | one thread | two threads at once |
//! |---|---|---|
//! | `LocalCounter::inc` | 0.7 ns | 1.0 to 2.3 ns (one each) |
//! | prometheus-client `Counter::inc` | 8.2 to 9.7 ns | 18 to 38 ns (shared) |
//! | `LocalHistogram::observe`, 16 buckets | 4.0 to 4.4 ns | 8.6 to 12 ns (one each) |
//! | prometheus-client `Histogram::observe`, 16 buckets | 17 to 19 ns | 60 to 103 ns (shared) |
//!
//! Two single-writer counters on one cache line cost 5 ns each in the same
//! bench (false sharing), hence the `align(128)` advice on [`LocalCounter`].
//!
//! The library's types stay the right choice off the hot path (per-request
//! API counters, the uplink's link state): register them on
//! [`Metrics::registry`] as usual.

mod collector;
mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::registry::Registry;

pub use collector::PerThread;

/// An exposition format, chosen from the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (as Prometheus does),
    /// the 0.0.4 text format otherwise (curl, promtool, older scrapers).
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A binary's metrics: its prefixed registry and the process metrics.
#[derive(Debug)]
pub struct Metrics {
    app: Registry,
    process: Registry,
}

impl Metrics {
    /// Metrics named `millgate_<tier>_*` (`tier` is `gateway` or `logic`).
    pub fn new(tier: &str) -> Metrics {
        let mut process = Registry::default();
        process.register_collector(Box::new(process::Process::new()));
        Metrics {
            app: Registry::with_prefix(format!("millgate_{tier}")),
            process,
        }
    }

    /// The registry to register the binary's metrics and collectors on
    /// (names without the prefix; counters without `_total`, which the
    /// encoder adds).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.app
    }

    /// Everything, in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let mut out = String::with_capacity(8 << 10);
        match format {
            Format::Prometheus => {
                prometheus_text::encode(&mut out, &self.app)?;
                prometheus_text::encode(&mut out, &self.process)?;
            }
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.app)?;
                text::encode_registry(&mut out, &self.process)?;
                text::encode_eof(&mut out)?;
            }
        }
        Ok(out)
    }
}

/// A counter (or gauge) written by one thread and read by any: relaxed
/// load and store, no read-modify-write. Two threads writing one would
/// lose updates (never memory safety); give each writer its own, in a
/// struct of its own aligned to 128 bytes (`#[repr(align(128))]`) so two
/// writers' counters never share a cache line.
#[derive(Debug, Default)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    /// Adds `n` (wrapping). Only the owning thread calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one. Only the owning thread calls this.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one (wrapping, for gauges: a sum over threads comes out
    /// right even if one thread's share is "negative"). Owner only.
    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    /// Sets the value (for a gauge published once per loop turn). Owner
    /// only.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// The value, from any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of a histogram's buckets, in the integer unit observed
/// (microseconds, items), and how many of that unit make one exported unit
/// (`1_000_000` for microseconds exported as seconds, `1` for counts: the
/// division of two exact integers gives the bound's nearest `f64`, so
/// `le="0.00005"` stays short). Cheap to clone; every thread's histogram of
/// one metric shares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    bounds: Arc<[u64]>,
    divisor: u64,
}

impl Buckets {
    /// Buckets with these upper bounds (sorted, duplicates dropped; a
    /// `+Inf` bucket is always added), exported divided by `divisor`
    /// (at least 1).
    pub fn new(bounds: impl Into<Vec<u64>>, divisor: u64) -> Buckets {
        let mut b = bounds.into();
        b.sort_unstable();
        b.dedup();
        Buckets {
            bounds: b.into(),
            divisor: divisor.max(1),
        }
    }

    /// `count` bounds `start`, `start × factor`, ... (rounded).
    pub fn exponential(start: u64, factor: f64, count: usize, divisor: u64) -> Buckets {
        let mut x = start as f64;
        let mut b = Vec::with_capacity(count);
        for _ in 0..count {
            b.push(x.round() as u64);
            x *= factor;
        }
        Buckets::new(b, divisor)
    }

    /// `v` (in the observed unit) in the exported unit.
    fn export(&self, v: u64) -> f64 {
        v as f64 / self.divisor as f64
    }

    /// The upper bounds, in the observed unit.
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }
}

/// A histogram written by one thread: a [`LocalCounter`] per bucket and a
/// sum. The count is the sum of the buckets (so `_count` always equals the
/// `+Inf` bucket, however a scrape interleaves with writes). The cells sit
/// in an allocation of whole 128-byte lines of their own, so two threads'
/// histograms never share a cache line, wherever their owners live.
#[derive(Debug)]
pub struct LocalHistogram {
    buckets: Buckets,
    /// Bucket `i` is cell `i` (one per bound, then `+Inf`); the sum is the
    /// cell after the last bucket.
    cells: Box<[Line]>,
}

/// Cells per [`Line`].
const CELLS: usize = 16;

/// 128 bytes of cells (two cache lines: the adjacent-line prefetcher pulls
/// pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line([LocalCounter; CELLS]);

impl LocalHistogram {
    /// An empty histogram over `buckets`.
    pub fn new(buckets: &Buckets) -> LocalHistogram {
        let cells = buckets.bounds.len() + 2;
        LocalHistogram {
            buckets: buckets.clone(),
            cells: (0..cells.div_ceil(CELLS))
                .map(|_| Line::default())
                .collect(),
        }
    }

    #[inline]
    fn cell(&self, i: usize) -> Option<&LocalCounter> {
        self.cells.get(i / CELLS).map(|l| &l.0[i % CELLS])
    }

    /// Records `v` (in the observed unit). Only the owning thread calls
    /// this.
    #[inline]
    pub fn observe(&self, v: u64) {
        let bounds = &self.buckets.bounds;
        if let Some(c) = self.cell(bounds.partition_point(|&b| b < v)) {
            c.inc();
        }
        if let Some(sum) = self.cell(bounds.len() + 1) {
            sum.add(v);
        }
    }

    /// The buckets it was made with.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// Adds this histogram's counts into `counts` (one per bucket, `+Inf`
    /// last) and returns its sum; `None` if its buckets are not `buckets`.
    fn add_to(&self, buckets: &Buckets, counts: &mut [u64]) -> Option<u64> {
        let n = self.buckets.bounds.len() + 1;
        if self.buckets != *buckets || counts.len() != n {
            return None;
        }
        for (i, acc) in counts.iter_mut().enumerate() {
            *acc = acc.wrapping_add(self.cell(i).map_or(0, LocalCounter::get));
        }
        self.cell(n).map(LocalCounter::get)
    }
}

#[cfg(test)]
mod tests;
