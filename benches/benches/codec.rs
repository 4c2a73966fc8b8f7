//! The frame codec (`proto::decode`, `proto::encode`, `proto::encode_raw`):
//! frames and bytes per second for heartbeat-sized and 1 KiB frames.
//!
//! Decoding goes through a receive buffer the way a connection's does: the
//! stream of 1,024 frames is appended to a `BytesMut` one read at a time and
//! every whole frame is taken off after each read. "whole" reads are 64 KiB
//! (many whole frames per read); "split" reads are 5 bytes for 12-byte
//! frames (each header over three reads) and 536 bytes (the minimum TCP
//! MSS) for 1 KiB frames (each frame over two or three reads).
//!
//! Run: `cargo bench -p millgate-benches --bench codec`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use proto::Kind;
use proto::pb;

const FRAMES: usize = 1024;
const MAX_BODY: usize = proto::codec::DEFAULT_MAX_BODY;

/// One frame size under test.
struct Case {
    name: &'static str,
    kind: Kind,
    body: Vec<u8>,
    split_read: usize,
}

fn cases() -> [Case; 2] {
    [
        Case {
            name: "heartbeat_12B",
            kind: Kind::Heartbeat,
            body: Vec::new(),
            split_read: 5,
        },
        Case {
            name: "send_1KiB",
            kind: Kind::Send,
            body: vec![0x5a; 1024 - proto::codec::HEADER_LEN],
            split_read: 536,
        },
    ]
}

fn stream(case: &Case) -> Vec<u8> {
    let mut out = BytesMut::new();
    for seq in 0..FRAMES as u32 {
        proto::encode_raw(&mut out, case.kind, seq, &case.body);
    }
    out.to_vec()
}

/// Feeds `stream` in reads of `read` bytes, decoding after each; returns the
/// frames decoded.
fn decode_all(stream: &[u8], read: usize, buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        while let Some(f) = proto::decode(buf, MAX_BODY).expect("valid frames") {
            black_box(&f);
            frames += 1;
        }
    }
    frames
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/decode");
    for case in cases() {
        let bytes = stream(&case);
        assert_eq!(decode_all(&bytes, 65_536, &mut BytesMut::new()), FRAMES);
        assert_eq!(
            decode_all(&bytes, case.split_read, &mut BytesMut::new()),
            FRAMES
        );
        for (how, read) in [("whole", 65_536), ("split", case.split_read)] {
            // Bytes per second; frames per second is this over the frame size.
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_function(format!("{}/{how}", case.name), |b| {
                b.iter_batched_ref(
                    || BytesMut::with_capacity(65_536),
                    |buf| decode_all(&bytes, read, buf),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/encode");
    g.throughput(Throughput::Elements(FRAMES as u64));
    // A HEARTBEAT_ACK through prost, as the gateway answers every heartbeat.
    let ack = pb::HeartbeatAck {
        next_heartbeat_ms: 30_000,
        idle_timeout_ms: 90_000,
    };
    g.bench_function("heartbeat_ack", |b| {
        let mut out = BytesMut::with_capacity(64 * FRAMES);
        b.iter(|| {
            out.clear();
            for seq in 0..FRAMES as u32 {
                proto::encode(&mut out, Kind::HeartbeatAck, seq, black_box(&ack));
            }
            black_box(out.len())
        });
    });
    // A 1 KiB frame with an already-encoded body, as a PUSH is relayed.
    let body = vec![0x5a; 1024 - proto::codec::HEADER_LEN];
    g.bench_function("push_1KiB", |b| {
        let mut out = BytesMut::with_capacity(1024 * FRAMES);
        b.iter(|| {
            out.clear();
            for seq in 0..FRAMES as u32 {
                proto::encode_raw(&mut out, Kind::Push, seq, black_box(&body));
            }
            black_box(out.len())
        });
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = decode, encode }
criterion_main!(benches);
