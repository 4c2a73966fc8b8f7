//! The uplink against a fake logic server that speaks the link protocol
//! (`proto::link`) by hand, so the test decides exactly which requests are
//! answered before the link dies.

mod support;

use std::net::TcpListener;

use bytes::Bytes;
use proto::Kind;
use proto::pb::{self, NetworkType, Status};
use support::fake_logic::FakeLogic;
use support::{Client, Gateway};

#[test]
fn requests_on_a_link_that_dies_are_answered_unavailable_and_answered_ones_are_not() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let mut logic = FakeLogic::accept(&listener);
    logic.hello();

    let mut alice = Client::connect(gw.addr);
    alice.login(7, 1, NetworkType::Wifi);
    // Announced (now, or on LinkUp): from here the worker forwards.
    let session = logic.announced(7);

    let send = pb::SendReq {
        channel: proto::inbox_of(8),
        client_msg_id: 1,
        body: Bytes::from_static(b"lost with the link"),
    };
    alice.send(Kind::Send, 3, &send);
    alice.send(Kind::Join, 4, &pb::Join { channel: 9 });
    let send_fwd = logic.next_client();
    assert_eq!((send_fwd.session, send_fwd.kind), (session, Kind::Send));
    assert_eq!(send_fwd.client_msg_id(), 1);
    let join = logic.next_client();
    assert_eq!((join.session, join.kind), (session, Kind::Join));
    // The JOIN is answered; the SEND never is: the logic server dies.
    let ok = pb::JoinAck {
        status: Status::Ok as i32,
        channel: 9,
        newest_msg_id: 0,
    };
    logic.deliver(session, Kind::JoinAck, join.seq, &ok);
    let ack: pb::JoinAck = alice.expect(Kind::JoinAck, 4);
    assert_eq!(ack.status, Status::Ok as i32);
    drop(logic);

    let ack: pb::SendAck = alice.expect(Kind::SendAck, 3);
    assert_eq!(ack.status, Status::Unavailable as i32);
    assert_eq!((ack.channel, ack.client_msg_id), (send.channel, 1));
    // Nothing else was bounced: the next frame answers the next request.
    alice.send(Kind::Heartbeat, 5, &pb::Heartbeat {});
    let _: pb::HeartbeatAck = alice.expect(Kind::HeartbeatAck, 5);
}

#[test]
fn a_link_that_is_not_read_answers_what_does_not_fit_and_keeps_reading() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--logic",
        &addr,
        "--uplink-queue",
        "4",
        "--send-rate",
        "1000000",
        "--send-burst",
        "1000000",
        // A link not read for a while is dead by default (3 s without a
        // pong); this one is alive, only slow.
        "--ping-interval-ms",
        "60000",
    ]);
    let logic = FakeLogic::accept(&listener);
    logic.hello();
    let mut alice = Client::connect(gw.addr);
    alice.login(7, 1, NetworkType::Wifi);
    logic.announced(7);
    logic.pause_reading();

    // The logic server stops reading. Alice writes 200 SENDs of 60 KiB
    // (12 MB, more than the link's buffers, the uplink's 4 MiB and the
    // 4-item queue hold), then a HEARTBEAT: the worker reads on, and what
    // does not fit towards the logic tier is answered UNAVAILABLE.
    let n = 200;
    let body = Bytes::from(vec![b'x'; 60 * 1024]);
    let mut writer = alice.stream.try_clone().unwrap();
    let write = std::thread::spawn(move || {
        use std::io::Write;
        for seq in 1..=n {
            let req = pb::SendReq {
                channel: proto::inbox_of(8),
                client_msg_id: u64::from(seq),
                body: body.clone(),
            };
            writer
                .write_all(&support::frame_bytes(Kind::Send, seq, &req))
                .unwrap();
        }
        let hb = support::frame_bytes(Kind::Heartbeat, n + 1, &pb::Heartbeat {});
        writer.write_all(&hb).unwrap();
    });
    // Answers come in order with the HEARTBEAT_ACK: once it is here,
    // every SEND the gateway refused has been answered.
    let mut refused = Vec::new();
    loop {
        let f = alice.recv().expect("answers, then the HEARTBEAT_ACK");
        match f.kind {
            Kind::HeartbeatAck => break,
            Kind::SendAck => {
                let ack: pb::SendAck = prost::Message::decode(f.body).unwrap();
                assert_eq!(ack.status, Status::Unavailable as i32);
                refused.push(f.seq);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    write.join().unwrap();
    assert!(!refused.is_empty(), "the queue never filled");

    // The logic server reads again: every other SEND arrives, once, in
    // order. Each SEND was either forwarded or answered, never both.
    logic.resume_reading();
    let forwarded: Vec<u32> = (1..=n).filter(|s| !refused.contains(s)).collect();
    assert!(forwarded.len() > 4, "only {} forwarded", forwarded.len());
    for &want in &forwarded {
        let got = logic.next_client();
        assert_eq!(
            (got.kind, got.client_msg_id()),
            (Kind::Send, u64::from(want))
        );
    }
}
