//! Session timers: the gateway's hashed timing wheel (`gateway::wheel`)
//! against a `std::collections::BinaryHeap` and tokio-util's `DelayQueue`,
//! at 1,000 and 1,000,000 live entries, in nanoseconds per operation.
//!
//! Each structure runs the same steady-state model of idle sessions, built
//! once per size and structure (not per iteration): `n` timers with
//! deadlines spread over the 30 s idle timeout; virtual time moves one
//! second per step; every due timer fires and, the session being alive, is
//! re-armed at its last heartbeat + 30 s (20 to 30 s ahead: heartbeats come
//! every 10 s); and each step `max(n / 100, 16)` random sessions end
//! (cancel) and as many new ones start (insert). Only the operation a
//! benchmark names is timed, a whole batch at a time:
//!
//! - `insert`: arming a timer among `n` live ones (re-arms and new sessions);
//! - `cancel`: disarming one (a session closing);
//! - `expiry`: finding and removing a due timer (the clock moving on);
//! - `rearm`: the lazy re-arm, expiry plus insert, paid once per idle period
//!   instead of once per heartbeat.
//!
//! The heap is the usual min-heap of `(deadline, key, generation)` with lazy
//! deletion: cancel bumps the key's generation, and the stale entry is
//! skipped when it reaches the top (that cost is in `expiry`). The
//! `DelayQueue` runs on a paused tokio clock that the model advances.
//!
//! Run: `cargo bench -p millgate-benches --bench timers`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::wheel::{Link, Wheel};
use tokio::runtime::Runtime;
use tokio_util::time::{DelayQueue, delay_queue};

const TICK_MS: u64 = 100;
const STEP_MS: u64 = 1_000;
const IDLE_MS: u64 = 30_000;
const HEARTBEAT_MS: u64 = 10_000;

/// What the model needs of a timer structure.
trait Timers {
    fn insert(&mut self, key: u32, deadline_ms: u64);
    fn cancel(&mut self, key: u32);
    /// Appends every key due at `now_ms` to `fired`, disarming it.
    fn expire(&mut self, now_ms: u64, fired: &mut Vec<u32>);
    /// Moves an external clock to `now_ms` (untimed).
    fn set_clock(&mut self, _now_ms: u64) {}
}

struct WheelTimers {
    wheel: Wheel,
    links: Vec<Link>,
}

impl WheelTimers {
    fn new(n: usize) -> Self {
        // The gateway's defaults: 4,096 slots of 100 ms.
        WheelTimers {
            wheel: Wheel::new(4096, TICK_MS, 0),
            links: vec![Link::default(); n],
        }
    }
}

impl Timers for WheelTimers {
    fn insert(&mut self, key: u32, deadline_ms: u64) {
        self.wheel.insert(&mut self.links, key, deadline_ms);
    }
    fn cancel(&mut self, key: u32) {
        self.wheel.cancel(&mut self.links, key);
    }
    fn expire(&mut self, now_ms: u64, fired: &mut Vec<u32>) {
        self.wheel.advance(&mut self.links, now_ms, fired);
    }
}

struct HeapTimers {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    generation: Vec<u32>,
}

impl HeapTimers {
    fn new(n: usize) -> Self {
        HeapTimers {
            heap: BinaryHeap::with_capacity(n),
            generation: vec![0; n],
        }
    }
}

impl Timers for HeapTimers {
    fn insert(&mut self, key: u32, deadline_ms: u64) {
        let generation = self.generation[key as usize];
        self.heap.push(Reverse((deadline_ms, key, generation)));
    }
    fn cancel(&mut self, key: u32) {
        self.generation[key as usize] += 1;
    }
    fn expire(&mut self, now_ms: u64, fired: &mut Vec<u32>) {
        while let Some(&Reverse((deadline, key, generation))) = self.heap.peek() {
            if deadline > now_ms {
                break;
            }
            self.heap.pop();
            let current = &mut self.generation[key as usize];
            if *current == generation {
                *current += 1;
                fired.push(key);
            }
        }
    }
}

struct DelayQueueTimers {
    rt: Rc<Runtime>,
    queue: DelayQueue<u32>,
    keys: Vec<Option<delay_queue::Key>>,
    start: tokio::time::Instant,
    clock_ms: u64,
}

impl DelayQueueTimers {
    /// Must be called inside `rt.enter()`.
    fn new(rt: Rc<Runtime>, n: usize) -> Self {
        DelayQueueTimers {
            rt,
            queue: DelayQueue::with_capacity(n),
            keys: vec![None; n],
            start: tokio::time::Instant::now(),
            clock_ms: 0,
        }
    }
}

impl Timers for DelayQueueTimers {
    fn insert(&mut self, key: u32, deadline_ms: u64) {
        let at = self.start + Duration::from_millis(deadline_ms);
        self.keys[key as usize] = Some(self.queue.insert_at(key, at));
    }
    fn cancel(&mut self, key: u32) {
        if let Some(k) = self.keys[key as usize].take() {
            self.queue.remove(&k);
        }
    }
    fn expire(&mut self, _now_ms: u64, fired: &mut Vec<u32>) {
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(expired)) = self.queue.poll_expired(&mut cx) {
            let key = expired.into_inner();
            self.keys[key as usize] = None;
            fired.push(key);
        }
    }
    fn set_clock(&mut self, now_ms: u64) {
        let by = Duration::from_millis(now_ms - self.clock_ms);
        self.clock_ms = now_ms;
        self.rt.block_on(tokio::time::advance(by));
    }
}

#[derive(Clone, Copy)]
enum Op {
    Insert,
    Cancel,
    Expiry,
    Rearm,
}

/// Time spent and operations done, per kind.
#[derive(Default, Clone, Copy)]
struct Tally {
    time: Duration,
    ops: u64,
}

/// The steady-state model around one structure.
struct Model<T> {
    timers: T,
    n: usize,
    now_ms: u64,
    deadline: Vec<u64>,
    churned_at: Vec<u64>,
    rng: u64,
    fired: Vec<u32>,
    churn: Vec<u32>,
    insert: Tally,
    cancel: Tally,
    expiry: Tally,
    /// The part of `insert` that re-arms fired timers.
    rearm_insert: Tally,
}

impl<T: Timers> Model<T> {
    fn new(timers: T, n: usize) -> Self {
        let mut m = Model {
            timers,
            n,
            now_ms: 0,
            deadline: vec![0; n],
            churned_at: vec![0; n],
            rng: 0x9e37_79b9_7f4a_7c15,
            fired: Vec::new(),
            churn: Vec::new(),
            insert: Tally::default(),
            cancel: Tally::default(),
            expiry: Tally::default(),
            rearm_insert: Tally::default(),
        };
        for key in 0..n as u32 {
            let d = 1 + m.random(IDLE_MS);
            m.deadline[key as usize] = d;
            m.timers.insert(key, d);
        }
        m
    }

    /// SplitMix64, reduced to `0..below`.
    fn random(&mut self, below: u64) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }

    /// One step of virtual time.
    fn step(&mut self) {
        self.now_ms += STEP_MS;
        let now = self.now_ms;
        self.timers.set_clock(now);

        self.fired.clear();
        let t = Instant::now();
        self.timers.expire(now, &mut self.fired);
        self.expiry.time += t.elapsed();
        self.expiry.ops += self.fired.len() as u64;
        for &key in &self.fired {
            assert!(self.deadline[key as usize] <= now, "fired early");
        }

        // Still alive: re-arm at the last heartbeat + the idle timeout.
        let mut fired = std::mem::take(&mut self.fired);
        for key in &fired {
            self.deadline[*key as usize] = now + IDLE_MS - self.random(HEARTBEAT_MS);
        }
        let t = self.timed_insert(&fired);
        self.rearm_insert.time += t;
        self.rearm_insert.ops += fired.len() as u64;

        // Sessions end and new ones take their place.
        self.churn.clear();
        for _ in 0..(self.n / 100).max(16) {
            let key = self.random(self.n as u64) as u32;
            // Each key at most once per step.
            if self.churned_at[key as usize] != now {
                self.churned_at[key as usize] = now;
                self.churn.push(key);
            }
        }
        let churn = std::mem::take(&mut self.churn);
        let t = Instant::now();
        for &key in &churn {
            self.timers.cancel(key);
        }
        self.cancel.time += t.elapsed();
        self.cancel.ops += churn.len() as u64;
        for key in &churn {
            self.deadline[*key as usize] = now + IDLE_MS;
        }
        self.timed_insert(&churn);
        self.churn = churn;
        fired.clear();
        self.fired = fired;
    }

    /// Inserts `keys` at their deadlines; returns the time taken.
    fn timed_insert(&mut self, keys: &[u32]) -> Duration {
        let t = Instant::now();
        for &key in keys {
            self.timers.insert(key, self.deadline[key as usize]);
        }
        let took = t.elapsed();
        self.insert.time += took;
        self.insert.ops += keys.len() as u64;
        took
    }

    fn tally(&self, op: Op) -> Tally {
        match op {
            Op::Insert => self.insert,
            Op::Cancel => self.cancel,
            Op::Expiry => self.expiry,
            // Every expiry in the model is followed by a re-arm insert.
            Op::Rearm => Tally {
                time: self.expiry.time + self.rearm_insert.time,
                ops: self.expiry.ops,
            },
        }
    }

    /// Steps until `iters` more `op`s were done; the time of exactly `iters`.
    fn measure(&mut self, op: Op, iters: u64) -> Duration {
        let before = self.tally(op);
        loop {
            self.step();
            let now = self.tally(op);
            let ops = now.ops - before.ops;
            if ops >= iters {
                let time = now.time - before.time;
                return time.mul_f64(iters as f64 / ops as f64);
            }
        }
    }
}

fn run<T: Timers>(c: &mut Criterion, n: usize, name: &str, timers: T) {
    let mut model = Model::new(timers, n);
    let mut g = c.benchmark_group(format!("timers/{n}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    for (op_name, op) in [
        ("insert", Op::Insert),
        ("cancel", Op::Cancel),
        ("expiry", Op::Expiry),
        ("rearm", Op::Rearm),
    ] {
        g.bench_function(format!("{name}/{op_name}"), |b| {
            b.iter_custom(|iters| model.measure(op, iters));
        });
    }
    g.finish();
}

fn timers(c: &mut Criterion) {
    for n in [1_000, 1_000_000] {
        run(c, n, "wheel", WheelTimers::new(n));
        run(c, n, "binary_heap", HeapTimers::new(n));
        let rt = Rc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a paused current-thread runtime"),
        );
        let _guard = rt.enter();
        run(c, n, "delay_queue", DelayQueueTimers::new(rt.clone(), n));
    }
}

criterion_group!(benches, timers);
criterion_main!(benches);
