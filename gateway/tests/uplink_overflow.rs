//! The uplink in-process, against a fake logic server: one worker that
//! stops draining its down-queue must not stop the others getting theirs.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gateway::conn_id::ConnId;
use gateway::uplink::{Down, Identity, Uplink, UplinkConfig};
use mio::{Poll, Token, Waker};
use proto::link;
use proto::{Kind, pb};
use support::fake_logic::FakeLogic;

#[test]
fn a_worker_that_does_not_drain_its_queue_does_not_hold_up_the_others() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let polls: Vec<Poll> = (0..2).map(|_| Poll::new().unwrap()).collect();
    let wakers: Vec<Arc<Waker>> = polls
        .iter()
        .map(|p| Arc::new(Waker::new(p.registry(), Token(0)).unwrap()))
        .collect();
    let identity = Identity::random().unwrap();
    let (up, ports) = Uplink::new(
        vec![addr],
        identity,
        &wakers,
        UplinkConfig {
            queue: 4,
            ..UplinkConfig::default()
        },
    )
    .unwrap();
    std::thread::spawn(move || up.run());

    // The fake reads the link for ever and answers every Ping.
    let mut logic = FakeLogic::accept(&l);
    logic.hello();

    // Worker 0 never drains; 64 PUSHes for it (its queue holds 4), then one
    // for worker 1, all in one write.
    let push = |n: u64| {
        let mut f = BytesMut::new();
        proto::encode(
            &mut f,
            Kind::Push,
            0,
            &pb::Push {
                channel: 5,
                msg_id: n,
                ..Default::default()
            },
        );
        f
    };
    let mut out = BytesMut::new();
    for n in 1..=64 {
        link::encode_deliver(&mut out, &[ConnId::new(0, 1).pack(1)], &push(n));
    }
    link::encode_deliver(&mut out, &[ConnId::new(1, 1).pack(1)], &push(99));
    logic.stream.write_all(&out).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ports[1].pop() {
            Some(Down::Deliver { targets, .. }) => {
                assert_eq!(targets, [ConnId::new(1, 1).pack(1)]);
                break;
            }
            Some(_) => {}
            None => {
                assert!(
                    Instant::now() < deadline,
                    "worker 1 got nothing while worker 0 sat on its queue"
                );
                std::thread::sleep(Duration::from_millis(5)); // polling a lock-free queue
            }
        }
    }
    // Worker 0's items are all still there, in order, once it drains.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 64 {
        assert!(
            Instant::now() < deadline,
            "worker 0 got {} of 64",
            got.len()
        );
        match ports[0].pop() {
            Some(Down::Deliver { frame, .. }) => {
                let f = proto::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
                    .unwrap()
                    .unwrap();
                let p: pb::Push = prost::Message::decode(f.body).unwrap();
                got.push(p.msg_id);
            }
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(1)), // polling a lock-free queue
        }
    }
    assert_eq!(got, (1..=64).collect::<Vec<_>>());
}
