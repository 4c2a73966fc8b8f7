//! [`PerThread`]: exposes counters, gauges and histograms that many
//! threads each own one copy of (a gateway worker's `WorkerStats`, a logic
//! shard's stats) as one metric each, summed at scrape time.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{Buckets, LocalHistogram};

/// How one metric is read from a thread's `T`.
enum Read<T> {
    Counter(fn(&T) -> u64),
    Gauge(fn(&T) -> u64),
    /// One gauge per thread, labelled with the thread's index.
    GaugeByThread {
        label: &'static str,
        read: fn(&T) -> u64,
    },
    /// A counter per value of one label; the reader takes the value's
    /// index.
    CounterBy {
        label: &'static str,
        values: Vec<&'static str>,
        read: fn(&T, usize) -> u64,
    },
    Histogram {
        buckets: Buckets,
        read: fn(&T) -> &LocalHistogram,
    },
}

struct Entry<T> {
    name: String,
    help: String,
    read: Read<T>,
}

/// Metrics summed over every thread's `T` when scraped. Register it with
/// `registry.register_collector(Box::new(per_thread))`.
///
/// ```
/// use std::sync::Arc;
/// use common::metrics::{LocalCounter, Metrics, PerThread};
///
/// #[derive(Default)]
/// struct WorkerStats { accepted: LocalCounter, open: LocalCounter }
///
/// let workers: Vec<Arc<WorkerStats>> = (0..2).map(|_| Arc::default()).collect();
/// let mut metrics = Metrics::new("gateway");
/// metrics.registry().register_collector(Box::new(
///     PerThread::new(workers.clone())
///         .counter("accepted", "Connections accepted.", |s| s.accepted.get())
///         .gauge("connections_open", "Client connections held.", |s| s.open.get()),
/// ));
/// workers[0].accepted.inc();
/// workers[1].accepted.add(2);
/// let text = metrics.encode(common::metrics::Format::Prometheus)?;
/// assert!(text.contains("\nmillgate_gateway_accepted_total 3\n"));
/// # Ok::<(), std::fmt::Error>(())
/// ```
pub struct PerThread<T> {
    threads: Vec<Arc<T>>,
    entries: Vec<Entry<T>>,
}

impl<T> fmt::Debug for PerThread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerThread")
            .field("threads", &self.threads.len())
            .field(
                "metrics",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<T: Send + Sync + 'static> PerThread<T> {
    /// A collector over these threads' stats (fixed for the process's life).
    pub fn new(threads: Vec<Arc<T>>) -> Self {
        PerThread {
            threads,
            entries: Vec::new(),
        }
    }

    fn with(mut self, name: &str, help: &str, read: Read<T>) -> Self {
        self.entries.push(Entry {
            name: name.to_owned(),
            help: help.to_owned(),
            read,
        });
        self
    }

    /// A counter (`name` without `_total`).
    pub fn counter(self, name: &str, help: &str, read: fn(&T) -> u64) -> Self {
        self.with(name, help, Read::Counter(read))
    }

    /// A gauge; the sum wraps, so threads' shares may be "negative".
    pub fn gauge(self, name: &str, help: &str, read: fn(&T) -> u64) -> Self {
        self.with(name, help, Read::Gauge(read))
    }

    /// A gauge per thread, `label` holding its index in the list given to
    /// [`PerThread::new`] (`worker_sessions_open{worker="1"}`), to see how
    /// evenly work is spread.
    pub fn gauge_by_thread(
        self,
        name: &str,
        help: &str,
        label: &'static str,
        read: fn(&T) -> u64,
    ) -> Self {
        self.with(name, help, Read::GaugeByThread { label, read })
    }

    /// A counter per value of `label` (`closes{reason="idle_timeout"}`);
    /// `read(stats, i)` reads the counter of `values[i]`.
    pub fn counter_by(
        self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl IntoIterator<Item = &'static str>,
        read: fn(&T, usize) -> u64,
    ) -> Self {
        let values = values.into_iter().collect();
        self.with(
            name,
            help,
            Read::CounterBy {
                label,
                values,
                read,
            },
        )
    }

    /// A histogram; every thread's must have `buckets` (one that does not
    /// is left out of the sum).
    pub fn histogram(
        self,
        name: &str,
        help: &str,
        buckets: &Buckets,
        read: fn(&T) -> &LocalHistogram,
    ) -> Self {
        let buckets = buckets.clone();
        self.with(name, help, Read::Histogram { buckets, read })
    }

    fn sum(&self, f: impl Fn(&T) -> u64) -> u64 {
        self.threads.iter().fold(0, |acc, t| acc.wrapping_add(f(t)))
    }
}

impl<T: Send + Sync + 'static> Collector for PerThread<T> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for e in &self.entries {
            match &e.read {
                Read::Counter(read) => {
                    let v = self.sum(read);
                    let mut m =
                        encoder.encode_descriptor(&e.name, &e.help, None, MetricType::Counter)?;
                    m.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                }
                Read::Gauge(read) => {
                    // Wrapped back: a sum of wrapping shares is the true
                    // (small) value, possibly negative in transit.
                    let v = self.sum(read) as i64;
                    let mut m =
                        encoder.encode_descriptor(&e.name, &e.help, None, MetricType::Gauge)?;
                    m.encode_gauge(&v)?;
                }
                Read::GaugeByThread { label, read } => {
                    let mut m =
                        encoder.encode_descriptor(&e.name, &e.help, None, MetricType::Gauge)?;
                    for (i, t) in self.threads.iter().enumerate() {
                        let index = i.to_string();
                        let labels = [(*label, index.as_str())];
                        m.encode_family(&labels)?.encode_gauge(&(read(t) as i64))?;
                    }
                }
                Read::CounterBy {
                    label,
                    values,
                    read,
                } => {
                    let mut m =
                        encoder.encode_descriptor(&e.name, &e.help, None, MetricType::Counter)?;
                    for (i, value) in values.iter().enumerate() {
                        let v = self.sum(|t| read(t, i));
                        let labels = [(*label, *value)];
                        let mut f = m.encode_family(&labels)?;
                        f.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                    }
                }
                Read::Histogram { buckets, read } => {
                    let mut counts = vec![0u64; buckets.bounds.len() + 1];
                    let mut sum = 0u64;
                    for t in &self.threads {
                        if let Some(s) = read(t).add_to(buckets, &mut counts) {
                            sum = sum.wrapping_add(s);
                        }
                    }
                    let count = counts.iter().fold(0u64, |a, c| a.wrapping_add(*c));
                    let pairs: Vec<(f64, u64)> = buckets
                        .bounds
                        .iter()
                        .map(|b| buckets.export(*b))
                        .chain(std::iter::once(f64::INFINITY))
                        .zip(counts)
                        .collect();
                    let mut m =
                        encoder.encode_descriptor(&e.name, &e.help, None, MetricType::Histogram)?;
                    m.encode_histogram::<NoLabelSet>(buckets.export(sum), count, &pairs, None)?;
                }
            }
        }
        Ok(())
    }
}
