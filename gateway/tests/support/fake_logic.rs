//! A fake logic server on one accepted link, speaking the link protocol
//! (`proto::link`) by hand, so a test decides exactly what is answered.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proto::Kind;
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb;

/// The gateway's end of the link, as the logic server sees it.
pub struct FakeLogic {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl FakeLogic {
    /// Waits (bounded) for the gateway to connect to `listener`.
    pub fn accept(listener: TcpListener) -> FakeLogic {
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

    pub fn next_raw(&mut self) -> LinkMsg {
        loop {
            if let Some(m) = link::decode(&mut self.buf, 1 << 22).unwrap() {
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("a link frame");
            assert!(n > 0, "the gateway closed the link");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn pong(&mut self, nonce: u64) {
        let mut out = BytesMut::new();
        link::encode_pong(&mut out, nonce);
        self.stream.write_all(&out).unwrap();
    }

    /// The next link frame; `Ping`s are answered and skipped. Bounded by
    /// a deadline of its own: the gateway pings every second, so the
    /// socket's read timeout alone would never fire while it waits for a
    /// frame that is not coming.
    pub fn next(&mut self) -> LinkMsg {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.next_raw() {
                LinkMsg::Ping { nonce } => self.pong(nonce),
                m => return m,
            }
            assert!(Instant::now() < deadline, "only Pings on the link for 10 s");
        }
    }

    /// Reads the `Hello` and answers the `Ping` sent with it: the link is
    /// up for the gateway from then on.
    pub fn handshake(&mut self) {
        assert!(matches!(self.next_raw(), LinkMsg::Hello { .. }));
        match self.next_raw() {
            LinkMsg::Ping { nonce } => self.pong(nonce),
            other => panic!("expected the Ping after Hello, got {other:?}"),
        }
    }

    /// The next client frame forwarded, skipping session notices:
    /// (session, kind, link seq, SendReq.client_msg_id if a SEND). The
    /// gateway puts its own link seq in place of the client's seq.
    pub fn next_client(&mut self) -> (SessionRef, Kind, u32, u64) {
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

    pub fn deliver(&mut self, to: SessionRef, kind: Kind, seq: u32, msg: &impl prost::Message) {
        let mut frame = BytesMut::new();
        proto::encode(&mut frame, kind, seq, msg);
        let mut out = BytesMut::new();
        link::encode_deliver(&mut out, &[to], &frame);
        self.stream.write_all(&out).unwrap();
    }

    /// Delivers a client frame with `body` as is (no re-encoding).
    pub fn deliver_raw(&mut self, to: SessionRef, kind: Kind, seq: u32, body: &[u8]) {
        let mut frame = BytesMut::new();
        proto::codec::encode_raw(&mut frame, kind, seq, body);
        let mut out = BytesMut::new();
        link::encode_deliver(&mut out, &[to], &frame);
        self.stream.write_all(&out).unwrap();
    }
}
