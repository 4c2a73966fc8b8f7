//! Model-checks the doorbell handshake with loom (every interleaving and
//! every outcome the memory model allows for its atomics).
//!
//! Run: `cargo test --release -p millgate-doorbell --features loom --test
//! loom` (.ci/run does; a few seconds).
#![cfg(feature = "loom")]

use doorbell::Bell;
use doorbell::sync::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// One sleeper, one producer: the producer publishes one item and rings;
/// the sleeper announces and looks. Never: the sleeper sleeps and the
/// producer does not wake it. `announce` and `ring` are the handshake
/// under test.
fn model<B: Send + Sync + 'static>(
    bell: fn() -> B,
    may_sleep: fn(&B, &AtomicUsize) -> bool,
    ring: fn(&B) -> bool,
) {
    loom::model(move || {
        let bell = Arc::new(bell());
        let queue = Arc::new(AtomicUsize::new(0));
        let (b, q) = (bell.clone(), queue.clone());
        let producer = thread::spawn(move || {
            q.fetch_add(1, Ordering::Release);
            ring(&b)
        });
        let slept = may_sleep(&bell, &queue);
        let woke = producer.join().unwrap();
        assert!(!slept || woke, "lost wake-up: asleep with an item queued");
    });
}

#[test]
fn the_fenced_handshake_never_loses_a_wake_up() {
    model(
        Bell::new,
        |b, q| b.may_sleep(|| q.load(Ordering::Acquire) > 0),
        Bell::ring,
    );
}

/// The handshake as the uplink had it: a Release store, no fence, an
/// AcqRel swap.
struct Racy {
    asleep: AtomicBool,
}

#[test]
fn the_unfenced_handshake_loses_a_wake_up_and_loom_finds_it() {
    let found = std::panic::catch_unwind(|| {
        model(
            || Racy {
                asleep: AtomicBool::new(false),
            },
            |b, q| {
                b.asleep.store(true, Ordering::Release);
                q.load(Ordering::Acquire) == 0
            },
            |b| b.asleep.swap(false, Ordering::AcqRel),
        )
    });
    assert!(
        found.is_err(),
        "loom found no lost wake-up in the racy handshake"
    );
}
