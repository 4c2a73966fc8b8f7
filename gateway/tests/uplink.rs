//! The uplink against a fake logic server that speaks the link protocol
//! (`proto::link`) by hand, so the test decides exactly which requests are
//! answered before the link dies.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::Kind;
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb::{self, NetworkType, Status};
use support::{Client, Gateway};

/// The gateway's end of the link, as the logic server sees it.
struct FakeLogic {
    stream: TcpStream,
    buf: BytesMut,
}

impl FakeLogic {
    /// Waits (bounded) for the gateway to connect to `listener`.
    fn accept(listener: TcpListener) -> FakeLogic {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(listener.accept().map(|(s, _)| s));
        });
        let stream = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the gateway never connected")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeLogic {
            stream,
            buf: BytesMut::new(),
        }
    }

    fn next_raw(&mut self) -> LinkMsg {
        loop {
            if let Some(m) = link::decode(&mut self.buf, 1 << 20).unwrap() {
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("a link frame");
            assert!(n > 0, "the gateway closed the link");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn pong(&mut self, nonce: u64) {
        use std::io::Write;
        let mut out = BytesMut::new();
        link::encode_pong(&mut out, nonce);
        self.stream.write_all(&out).unwrap();
    }

    /// The next link frame; `Ping`s are answered and skipped.
    fn next(&mut self) -> LinkMsg {
        loop {
            match self.next_raw() {
                LinkMsg::Ping { nonce } => self.pong(nonce),
                m => return m,
            }
        }
    }

    /// Reads the `Hello` and answers the `Ping` sent with it: the link is
    /// up for the gateway from then on.
    fn handshake(&mut self) {
        assert!(matches!(self.next_raw(), LinkMsg::Hello { .. }));
        match self.next_raw() {
            LinkMsg::Ping { nonce } => self.pong(nonce),
            other => panic!("expected the Ping after Hello, got {other:?}"),
        }
    }

    /// The next client frame forwarded, skipping session notices.
    /// The next client frame forwarded, skipping session notices:
    /// (session, kind, link seq, SendReq.client_msg_id if a SEND). The
    /// gateway puts its own link seq in place of the client's seq.
    fn next_client(&mut self) -> (SessionRef, Kind, u32, u64) {
        loop {
            if let LinkMsg::Client { session, frame, .. } = self.next() {
                let f = proto::decode(&mut BytesMut::from(&frame[..]), usize::MAX)
                    .unwrap()
                    .unwrap();
                let id = match f.kind {
                    Kind::Send => {
                        <pb::SendReq as prost::Message>::decode(f.body)
                            .unwrap()
                            .client_msg_id
                    }
                    _ => 0,
                };
                return (session, f.kind, f.seq, id);
            }
        }
    }

    fn deliver(&mut self, to: SessionRef, kind: Kind, seq: u32, msg: &impl prost::Message) {
        use std::io::Write;
        let mut frame = BytesMut::new();
        proto::encode(&mut frame, kind, seq, msg);
        let mut out = BytesMut::new();
        link::encode_deliver(&mut out, &[to], &frame);
        self.stream.write_all(&out).unwrap();
    }
}

#[test]
fn requests_on_a_link_that_dies_are_answered_unavailable_and_answered_ones_are_not() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let mut logic = FakeLogic::accept(listener);
    logic.handshake();

    let mut alice = Client::connect(gw.addr);
    alice.login(7, 1, NetworkType::Wifi);
    // Announced (now, or on LinkUp): from here the worker forwards.
    let session = match logic.next() {
        LinkMsg::Open { session, uin, .. } | LinkMsg::Reopen { session, uin, .. } => {
            assert_eq!(uin, 7);
            session
        }
        other => panic!("unexpected {other:?}"),
    };

    let send = pb::SendReq {
        channel: 1 << 63 | 8,
        client_msg_id: 1,
        body: Bytes::from_static(b"lost with the link"),
    };
    alice.send(Kind::Send, 3, &send);
    alice.send(Kind::Join, 4, &pb::Join { channel: 9 });
    let (s, kind, _, id) = logic.next_client();
    assert_eq!((s, kind, id), (session, Kind::Send, 1));
    let (s, kind, join_seq, _) = logic.next_client();
    assert_eq!((s, kind), (session, Kind::Join));
    // The JOIN is answered; the SEND never is: the logic server dies.
    let ok = pb::JoinAck {
        status: Status::Ok as i32,
        channel: 9,
        newest_msg_id: 0,
    };
    logic.deliver(session, Kind::JoinAck, join_seq, &ok);
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
    let mut logic = FakeLogic::accept(listener);
    logic.handshake();
    let mut alice = Client::connect(gw.addr);
    alice.login(7, 1, NetworkType::Wifi);
    assert!(matches!(
        logic.next(),
        LinkMsg::Open { .. } | LinkMsg::Reopen { .. }
    ));

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
                channel: 1 << 63 | 8,
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
    let forwarded: Vec<u32> = (1..=n).filter(|s| !refused.contains(s)).collect();
    assert!(forwarded.len() > 4, "only {} forwarded", forwarded.len());
    for &want in &forwarded {
        let (_, kind, _, got) = logic.next_client();
        assert_eq!((kind, got), (Kind::Send, u64::from(want)));
    }
}
