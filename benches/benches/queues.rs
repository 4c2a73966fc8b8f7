//! The worker-to-uplink hand-off: crossbeam's `ArrayQueue` (what
//! `gateway::uplink` uses) against `std::sync::mpsc::sync_channel` and a
//! `Mutex<VecDeque>`, with 2 producer threads and 1 consumer, in
//! nanoseconds per item moved.
//!
//! Items are 64 bytes, about the size of an `uplink::Up`. Every queue is
//! bounded at the gateway's default of 65,536 items. Each is used the way
//! it is meant to be: the `ArrayQueue` ends spin with `yield_now` on full or
//! empty (the gateway sleeps on a waker instead, which a doorbell makes
//! rare); the channel blocks; the consumer of the `Mutex<VecDeque>` swaps
//! the whole deque out under one lock, as a batching consumer would.
//!
//! Run: `cargo bench -p millgate-benches --bench queues`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;

const CAPACITY: usize = 65_536;
const PRODUCERS: u64 = 2;

type Item = [u64; 8];

fn item(i: u64) -> Item {
    [i; 8]
}

/// Runs `PRODUCERS` threads of `produce(count)` and `consume(total)` on
/// this thread; returns the wall time.
fn run(iters: u64, produce: impl Fn(u64) + Sync, consume: impl FnOnce(u64) -> u64) -> Duration {
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..PRODUCERS {
            let count = iters / PRODUCERS + u64::from(p < iters % PRODUCERS);
            let produce = &produce;
            s.spawn(move || produce(count));
        }
        black_box(consume(iters));
    });
    start.elapsed()
}

fn array_queue(iters: u64) -> Duration {
    let q = ArrayQueue::<Item>::new(CAPACITY);
    run(
        iters,
        |count| {
            for i in 0..count {
                let mut it = item(i);
                while let Err(back) = q.push(it) {
                    it = back;
                    thread::yield_now();
                }
            }
        },
        |total| {
            let mut sum = 0;
            let mut got = 0;
            while got < total {
                match q.pop() {
                    Some(it) => {
                        sum += it[0];
                        got += 1;
                    }
                    None => thread::yield_now(),
                }
            }
            sum
        },
    )
}

fn mpsc_channel(iters: u64) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<Item>(CAPACITY);
    run(
        iters,
        |count| {
            let tx = tx.clone();
            for i in 0..count {
                tx.send(item(i))
                    .expect("the consumer outlives the producers");
            }
        },
        |total| {
            let mut sum = 0;
            for _ in 0..total {
                sum += rx.recv().expect("producers send every item")[0];
            }
            sum
        },
    )
}

fn mutex_deque(iters: u64) -> Duration {
    let q = Mutex::new(VecDeque::<Item>::with_capacity(CAPACITY));
    run(
        iters,
        |count| {
            for i in 0..count {
                loop {
                    let mut d = q.lock().expect("no panics while locked");
                    if d.len() < CAPACITY {
                        d.push_back(item(i));
                        break;
                    }
                    drop(d);
                    thread::yield_now();
                }
            }
        },
        |total| {
            let mut sum = 0;
            let mut got = 0;
            let mut batch = VecDeque::with_capacity(CAPACITY);
            while got < total {
                std::mem::swap(&mut *q.lock().expect("no panics while locked"), &mut batch);
                if batch.is_empty() {
                    thread::yield_now();
                }
                for it in batch.drain(..) {
                    sum += it[0];
                    got += 1;
                }
            }
            sum
        },
    )
}

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("queues/2p1c");
    g.throughput(Throughput::Elements(1));
    g.bench_function("crossbeam_array_queue", |b| b.iter_custom(array_queue));
    g.bench_function("std_mpsc_sync_channel", |b| b.iter_custom(mpsc_channel));
    g.bench_function("mutex_vecdeque", |b| b.iter_custom(mutex_deque));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = queues }
criterion_main!(benches);
