//! Test harness: starts the real `logic` binary on a loopback port and
//! speaks the link protocol to it as fake gateways. Every read has a socket
//! timeout, so a missing answer fails the test instead of hanging it.
//!
//! # Barriers, not silence
//!
//! "Nothing more arrives" is shown by a round trip whose answer is ordered
//! behind anything the earlier requests could still send, never by waiting
//! a while: [`Gateway::expect_next`] takes the next link message and fails
//! unless it is exactly the barrier's answer. The ordering comes from
//! `logic/src/lib.rs` ("Threads and sharding", "Flows") and
//! `logic/src/worker.rs`:
//! - a shard's link output reaches the network thread through one FIFO in
//!   the order the shard produced it, and each fake gateway has one link
//!   connection, so a gateway receives any one shard's frames in that order;
//!   a shard flushes its link output before its messages to peer shards;
//! - every PUSH of a channel is produced by the channel's one shard, in the
//!   same step as the SEND_ACK(OK) of its SEND.
//!
//! Hence three barriers, each sent once the answers of the requests it
//! covers have been read:
//! - [`Gateway::join_barrier`]: a JOIN of a room is answered by the room's
//!   shard (also for a member joining again). It reaches that shard after
//!   the earlier SENDs were stored there, so every PUSH they caused, to any
//!   gateway, was queued before its JOIN_ACK.
//! - a SYNC ([`Gateway::sync`] then `expect_next`) is answered by the
//!   user's shard once every shard holding one of the user's channels has
//!   handled its part, which each does after the requests queued before it
//!   and flushes (PUSHes first) before reporting.
//! - a retried SEND (same `client_msg_id`) is answered DUPLICATE by the
//!   sender's shard, only after the channel's shard reported the original's
//!   outcome, which it does after flushing the original's fan-out.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb;

/// How long any expected answer may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The inbox channel of `uin`.
pub fn inbox(uin: u64) -> u64 {
    proto::inbox_of(uin)
}

/// A running `logic` process, killed on drop.
pub struct Logic {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    /// The server's data directory, removed on drop.
    _data: tempfile::TempDir,
}

impl Logic {
    /// Starts the binary with two shards, ephemeral ports and `extra` flags.
    pub fn start(extra: &[&str]) -> Logic {
        let data = tempfile::tempdir().expect("data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_logic"))
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--threads",
                "2",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn logic");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut field = |prefix: &str| -> SocketAddr {
            let line = lines.next().expect("a line").expect("utf-8 line");
            let rest = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix}, got {line}"));
            rest.trim().parse().expect("an address")
        };
        let addr = field("listening ");
        let metrics = field("metrics ");
        Logic {
            child: Some(child),
            addr,
            metrics,
            _data: data,
        }
    }

    /// A fake gateway connected and introduced with `Hello`.
    pub fn gateway(&self, gateway_id: u64) -> Gateway {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut g = Gateway {
            stream,
            rbuf: BytesMut::new(),
            id: gateway_id,
        };
        let mut b = BytesMut::new();
        link::encode_hello(&mut b, gateway_id, gateway_id);
        g.write(&b);
        g
    }

    /// The value of metric `name` from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.metrics).expect("metrics connect");
        s.set_read_timeout(Some(ANSWER_TIMEOUT)).expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .expect("a number")
    }
}

impl Logic {
    /// Sends `signal` (e.g. "TERM") to the process and waits for it to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(ANSWER_TIMEOUT)
            .expect("exits in time")
            .expect("wait")
    }

    /// Waits until metric `name` reads `want` (for effects no reply shows,
    /// such as a link close), failing after [`ANSWER_TIMEOUT`].
    pub fn metric_eventually(&self, name: &str, want: u64) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let v = self.metric(name);
            if v == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {v}, want {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Logic {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One client frame delivered to one session.
#[derive(Debug, Clone)]
pub struct Got {
    pub target: SessionRef,
    pub kind: Kind,
    pub seq: u32,
    pub body: Bytes,
    /// How many targets the carrying `Deliver` listed.
    pub fanout: usize,
}

impl Got {
    pub fn push(&self) -> pb::Push {
        assert_eq!(self.kind, Kind::Push);
        pb::Push::decode(self.body.clone()).expect("push body")
    }
    pub fn send_ack(&self) -> pb::SendAck {
        assert_eq!(self.kind, Kind::SendAck);
        pb::SendAck::decode(self.body.clone()).expect("send ack body")
    }
}

/// A fake gateway: one link connection.
pub struct Gateway {
    pub stream: TcpStream,
    rbuf: BytesMut,
    pub id: u64,
}

/// A fake session on a fake gateway.
#[derive(Debug, Clone, Copy)]
pub struct Sess {
    pub s: SessionRef,
    pub uin: u64,
    pub device: u32,
    /// The login time its `Open`/`Reopen` carries.
    pub login_ms: u64,
}

/// Login times handed out by [`Sess::new`]: each new session is a newer
/// login than every session made before it.
static LOGINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_700_000_000_000);

impl Sess {
    pub fn new(conn: u64, epoch: u64, uin: u64, device: u32) -> Sess {
        Sess {
            s: SessionRef { conn, epoch },
            uin,
            device,
            login_ms: LOGINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Gateway {
    /// A link connection that has not said `Hello`.
    pub fn raw(addr: SocketAddr) -> Gateway {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Gateway {
            stream,
            rbuf: BytesMut::new(),
            id: 0,
        }
    }

    pub fn write(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("link write");
    }

    pub fn open(&mut self, s: Sess) {
        let mut b = BytesMut::new();
        link::encode_open(&mut b, s.s, s.uin, s.device, s.login_ms);
        self.write(&b);
    }

    pub fn reopen(&mut self, s: Sess) {
        let mut b = BytesMut::new();
        link::encode_reopen(&mut b, s.s, s.uin, s.device, s.login_ms);
        self.write(&b);
    }

    pub fn close(&mut self, s: Sess) {
        let mut b = BytesMut::new();
        link::encode_close(&mut b, s.s, s.uin, s.device);
        self.write(&b);
    }

    /// Forwards a client request from session `s`.
    pub fn request<M: Message>(&mut self, s: Sess, kind: Kind, seq: u32, msg: &M) {
        let mut f = BytesMut::new();
        codec::encode(&mut f, kind, seq, msg);
        let mut b = BytesMut::new();
        link::encode_client(&mut b, s.s, s.uin, s.device, &f);
        self.write(&b);
    }

    pub fn send(&mut self, s: Sess, channel: u64, cmid: u64, body: &[u8]) {
        let req = pb::SendReq {
            channel,
            client_msg_id: cmid,
            body: Bytes::copy_from_slice(body),
        };
        self.request(s, Kind::Send, cmid as u32, &req);
    }

    pub fn join(&mut self, s: Sess, channel: u64, seq: u32) {
        self.request(s, Kind::Join, seq, &pb::Join { channel });
    }

    pub fn leave(&mut self, s: Sess, channel: u64, seq: u32) {
        self.request(s, Kind::Leave, seq, &pb::Leave { channel });
    }

    pub fn sync(&mut self, s: Sess, seq: u32, heads: &[(u64, u64)]) {
        let heads = heads
            .iter()
            .map(|&(channel, msg_id)| pb::ChannelHead { channel, msg_id })
            .collect();
        self.request(s, Kind::Sync, seq, &pb::SyncReq { heads });
    }

    /// The next link message, waiting at most `timeout`; `None` on timeout.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<LinkMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) =
                link::decode(&mut self.rbuf, link::DEFAULT_MAX_LINK_FRAME).expect("valid link")
            {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0u8; 16384];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("logic closed the link"),
                Ok(n) => self.rbuf.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("link read: {e}"),
            }
        }
    }

    /// The next link message; fails the test after [`ANSWER_TIMEOUT`].
    pub fn recv(&mut self) -> LinkMsg {
        self.recv_within(ANSWER_TIMEOUT)
            .expect("an answer from logic in time")
    }

    /// Reads `Deliver`s until `n` client frames (counted per target) are in.
    pub fn collect(&mut self, n: usize) -> Vec<Got> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.recv() {
                LinkMsg::Deliver { targets, frame } => unpack(&mut got, &targets, &frame),
                other => panic!("expected Deliver, got {other:?}"),
            }
        }
        got
    }

    /// Asserts that logic closes the link (after any frames in flight).
    pub fn expect_closed(&mut self) {
        self.stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("gateway {}: expected the link to close, got {e}", self.id),
            }
        }
    }

    /// The next link message, which must be exactly one client frame for
    /// `s`, of `kind` and `seq`: a barrier's answer (see the module doc),
    /// so anything still coming to this gateway from earlier requests
    /// fails the test here instead of arriving unseen later.
    pub fn expect_next(&mut self, s: Sess, kind: Kind, seq: u32) -> Got {
        let mut got = match self.recv() {
            LinkMsg::Deliver { targets, frame } => {
                let mut got = Vec::new();
                unpack(&mut got, &targets, &frame);
                got
            }
            other => panic!(
                "gateway {}: expected {kind:?} {seq}, got {other:?}",
                self.id
            ),
        };
        assert_eq!(
            got.len(),
            1,
            "gateway {}: expected only {kind:?} {seq}, got {got:?}",
            self.id
        );
        let g = got.remove(0);
        assert_eq!(
            (g.target, g.kind, g.seq),
            (s.s, kind, seq),
            "gateway {}: expected {kind:?} {seq} first, got {g:?}",
            self.id
        );
        g
    }

    /// A barrier behind every PUSH of `room` caused by SENDs whose acks
    /// were read: `s` (re)joins the room and the JOIN_ACK(OK) must be the
    /// next message (see the module doc). Returns the room's newest id.
    pub fn join_barrier(&mut self, s: Sess, room: u64, seq: u32) -> u64 {
        self.join(s, room, seq);
        let ack = pb::JoinAck::decode(self.expect_next(s, Kind::JoinAck, seq).body)
            .expect("join ack body");
        assert_eq!(
            (ack.status, ack.channel),
            (pb::Status::Ok as i32, room),
            "{ack:?}"
        );
        ack.newest_msg_id
    }
}

/// Splits one `Deliver` into a `Got` per target.
pub fn unpack(got: &mut Vec<Got>, targets: &[SessionRef], frame: &[u8]) {
    let f = codec::decode(&mut BytesMut::from(frame), 1 << 20)
        .expect("valid client frame")
        .expect("whole client frame");
    assert_eq!(
        codec::HEADER_LEN + f.body.len(),
        frame.len(),
        "exactly one client frame"
    );
    for &t in targets {
        got.push(Got {
            target: t,
            kind: f.kind,
            seq: f.seq,
            body: f.body.clone(),
            fanout: targets.len(),
        });
    }
}

/// The frames of `got` addressed to `s`, of kind `kind`.
pub fn to(got: &[Got], s: Sess, kind: Kind) -> Vec<Got> {
    got.iter()
        .filter(|g| g.target == s.s && g.kind == kind)
        .cloned()
        .collect()
}
