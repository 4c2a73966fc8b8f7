//! A fake logic server on one accepted link, speaking the link protocol
//! (`proto::link`) by hand, so a test decides exactly what is answered.
//!
//! A thread reads the link: it answers the gateway's liveness `Ping`s
//! while [`FakeLogic::pongs`] is set (the gateway closes a link that
//! stops answering) and hands every other frame to the test; paused
//! ([`FakeLogic::pause_reading`]) it reads nothing, so the link backs up
//! as behind a logic server that stopped reading. Every wait is bounded:
//! a `Ping` a second would keep a plain socket read timeout from ever
//! firing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::Kind;
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb;

/// How long any wait for the gateway lasts before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// The gateway's end of the link, as the logic server sees it.
pub struct FakeLogic {
    rx: mpsc::Receiver<LinkMsg>,
    pub stream: TcpStream,
    /// Cleared, the reader stops answering Pings (a hung logic server).
    pub pongs: Arc<AtomicBool>,
    paused: Arc<(Mutex<bool>, Condvar)>,
}

/// A client frame the gateway forwarded.
pub struct Forwarded {
    pub session: SessionRef,
    pub kind: Kind,
    /// The gateway's link seq (it puts its own in place of the client's).
    pub seq: u32,
    pub frame: Bytes,
}

impl Forwarded {
    /// The `client_msg_id` of a forwarded SEND.
    pub fn client_msg_id(&self) -> u64 {
        assert_eq!(self.kind, Kind::Send);
        let f = proto::decode(&mut BytesMut::from(&self.frame[..]), usize::MAX)
            .unwrap()
            .unwrap();
        <pb::SendReq as prost::Message>::decode(f.body)
            .unwrap()
            .client_msg_id
    }
}

impl FakeLogic {
    /// Waits (bounded) for the gateway to connect to `listener`.
    pub fn accept(listener: &TcpListener) -> FakeLogic {
        listener.set_nonblocking(false).unwrap();
        let (tx, rx) = mpsc::channel();
        let l = listener.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = tx.send(l.accept().map(|(s, _)| s));
        });
        let stream = rx
            .recv_timeout(WAIT)
            .expect("the gateway never connected")
            .unwrap();
        FakeLogic::on(stream)
    }

    /// A fake on a link already accepted.
    pub fn on(stream: TcpStream) -> FakeLogic {
        let pongs = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel();
        let mut reader = stream.try_clone().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let answer = pongs.clone();
        let paused = Arc::new((Mutex::new(false), Condvar::new()));
        let gate = paused.clone();
        std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Ok(Some(m)) = link::decode(&mut buf, 1 << 22) {
                    if let LinkMsg::Ping { nonce } = m {
                        if answer.load(Ordering::Acquire) {
                            let mut out = BytesMut::new();
                            link::encode_pong(&mut out, nonce);
                            let _ = writer.write_all(&out);
                        }
                    } else if tx.send(m).is_err() {
                        return;
                    }
                }
                let (lock, resumed) = &*gate;
                drop(resumed.wait_while(lock.lock().unwrap(), |p| *p).unwrap());
                match reader.read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
        });
        FakeLogic {
            rx,
            stream,
            pongs,
            paused,
        }
    }

    /// The reader stops reading the link after the read in progress (at
    /// most one 4 KiB chunk more), Pings included.
    pub fn pause_reading(&self) {
        *self.paused.0.lock().unwrap() = true;
    }

    /// The reader reads the link again.
    pub fn resume_reading(&self) {
        *self.paused.0.lock().unwrap() = false;
        self.paused.1.notify_all();
    }

    /// The next link frame other than a `Ping`.
    pub fn next(&self) -> LinkMsg {
        self.rx.recv_timeout(WAIT).expect("a link frame")
    }

    /// Reads the gateway's `Hello`, its first frame.
    pub fn hello(&self) {
        let m = self.next();
        assert!(matches!(m, LinkMsg::Hello { .. }), "expected Hello: {m:?}");
    }

    /// The next announcement (`Open` or `Reopen`) of `uin`'s session.
    pub fn announced(&self, uin: u64) -> SessionRef {
        loop {
            match self.next() {
                LinkMsg::Open {
                    session, uin: u, ..
                }
                | LinkMsg::Reopen {
                    session, uin: u, ..
                } if u == uin => return session,
                _ => {}
            }
        }
    }

    /// The next client frame forwarded, skipping session notices.
    pub fn next_client(&self) -> Forwarded {
        loop {
            if let LinkMsg::Client { session, frame, .. } = self.next() {
                let h = proto::codec::peek_header(&frame, usize::MAX)
                    .unwrap()
                    .unwrap();
                return Forwarded {
                    session,
                    kind: h.kind,
                    seq: h.seq,
                    frame,
                };
            }
        }
    }

    /// Delivers `msg` as a client frame to `to`.
    pub fn deliver(&mut self, to: SessionRef, kind: Kind, seq: u32, msg: &impl prost::Message) {
        self.deliver_raw(to, kind, seq, &msg.encode_to_vec());
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

impl Drop for FakeLogic {
    /// The logic server dies: the link closes (the reader holds clones of
    /// the socket, so dropping ours alone would not close it).
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
