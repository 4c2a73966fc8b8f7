//! Login token verification (`proto::TokenKey::verify`, HMAC-SHA256 over
//! 20 bytes with a pre-scheduled key, compared in constant time): tokens per
//! second on one core. A rejected token costs the same as an accepted one,
//! the MAC being checked first.
//!
//! Run: `cargo bench -p millgate-benches --bench token`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::TokenKey;

const NOW: u64 = 1_800_000_000;

fn token(c: &mut Criterion) {
    let key = TokenKey::new(b"a shared secret of ordinary length");
    let good = key.mint(1_000_042, 3, NOW + 86_400);
    let mut bad = good;
    bad[20] ^= 1;
    assert!(key.verify(&good, 1_000_042, 3, NOW).is_ok());
    assert!(key.verify(&bad, 1_000_042, 3, NOW).is_err());
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_valid", |b| {
        b.iter(|| key.verify(black_box(&good), black_box(1_000_042), 3, NOW))
    });
    g.bench_function("verify_forged", |b| {
        b.iter(|| key.verify(black_box(&bad), black_box(1_000_042), 3, NOW))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = token }
criterion_main!(benches);
