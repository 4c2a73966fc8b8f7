//! What one hot-path observation costs: the single-writer `LocalCounter`
//! and `LocalHistogram` against prometheus-client's `Counter` (atomic
//! `fetch_add`) and `Histogram` (a mutex per observation), on one thread
//! and on two threads at once (the library's metric shared, as it would
//! be; ours one per thread, as they are meant to be used).
//!
//!     cargo bench -p millgate-common --bench hot_metrics
//!
//! The figures are quoted in `common/src/metrics.rs`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::metrics::{Buckets, LocalCounter, LocalHistogram};
use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// 16 buckets, 50 us to 1.6 s.
fn buckets() -> Buckets {
    Buckets::exponential(50, 2.0, 16, 1_000_000)
}

/// Latencies spread over the buckets, in microseconds.
fn values() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            40 << (x % 16)
        })
        .collect()
}

/// Runs `op(i)` `iters` times on each of two threads at once; the slower
/// thread's time.
fn on_two_threads<S: Send + Sync + 'static>(
    iters: u64,
    state: [Arc<S>; 2],
    op: fn(&S, u64),
) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = state
        .into_iter()
        .map(|s| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                for i in 0..iters {
                    op(&s, i);
                }
                t.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

/// A counter on cache lines of its own, as in a worker's stats struct.
#[derive(Default)]
#[repr(align(128))]
struct Padded(LocalCounter);

fn counters(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter");
    let local = LocalCounter::default();
    g.bench_function("local_inc", |b| b.iter(|| black_box(&local).inc()));
    let shared: Counter = Counter::default();
    g.bench_function("prometheus_inc", |b| b.iter(|| black_box(&shared).inc()));
    g.bench_function("local_inc_2_threads_one_each", |b| {
        b.iter_custom(|n| {
            on_two_threads(n, [Arc::default(), Arc::default()], |c: &Padded, _| {
                black_box(&c.0).inc()
            })
        })
    });
    g.bench_function("prometheus_inc_2_threads_shared", |b| {
        b.iter_custom(|n| {
            let c: Arc<Counter> = Arc::default();
            on_two_threads(n, [c.clone(), c], |c: &Counter, _| {
                black_box(c).inc();
            })
        })
    });
    g.finish();
}

struct Local {
    h: LocalHistogram,
    values: Vec<u64>,
}

struct Shared {
    h: Histogram,
    values: Vec<f64>,
}

fn local() -> Arc<Local> {
    Arc::new(Local {
        h: LocalHistogram::new(&buckets()),
        values: values(),
    })
}

fn shared() -> Arc<Shared> {
    let bounds = buckets()
        .bounds()
        .iter()
        .map(|b| *b as f64 / 1e6)
        .collect::<Vec<_>>();
    Arc::new(Shared {
        h: Histogram::new(bounds),
        values: values().iter().map(|v| *v as f64 / 1e6).collect(),
    })
}

fn histograms(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");
    let l = local();
    let mut i = 0usize;
    g.bench_function("local_observe", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(&l.h).observe(l.values[i]);
        })
    });
    let s = shared();
    let mut i = 0usize;
    g.bench_function("prometheus_observe", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(&s.h).observe(s.values[i]);
        })
    });
    g.bench_function("local_observe_2_threads_one_each", |b| {
        b.iter_custom(|n| {
            on_two_threads(n, [local(), local()], |l: &Local, i| {
                black_box(&l.h).observe(l.values[(i & 1023) as usize])
            })
        })
    });
    g.bench_function("prometheus_observe_2_threads_shared", |b| {
        b.iter_custom(|n| {
            let s = shared();
            on_two_threads(n, [s.clone(), s], |s: &Shared, i| {
                black_box(&s.h).observe(s.values[(i & 1023) as usize])
            })
        })
    });
    g.finish();
}

criterion_group!(benches, counters, histograms);
criterion_main!(benches);
