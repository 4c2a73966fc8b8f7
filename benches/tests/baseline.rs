//! The baseline binary speaks PROTOCOL.md's session rules: it is started on
//! an ephemeral port and driven over real sockets with the proto codec.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use prost::Message;
use proto::pb::{self, error::ErrorCode};
use proto::{Frame, Kind, TokenKey};

const SECRET: &[u8] = b"baseline test secret";
const HEARTBEAT_MS: u32 = 200;

/// A baseline process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("baseline-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        let mut with_newline = SECRET.to_vec();
        with_newline.push(b'\n');
        std::fs::write(&secret, with_newline).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_baseline"))
            .args(["--listen", "127.0.0.1:0", "--heartbeat-ms"])
            .arg(HEARTBEAT_MS.to_string())
            .arg("--secret-file")
            .arg(&secret)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("gateway listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server { child, addr, dir }
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    fn send<M: Message>(&mut self, kind: Kind, seq: u32, msg: &M) {
        let mut out = BytesMut::new();
        proto::encode(&mut out, kind, seq, msg);
        self.stream.write_all(&out).unwrap();
    }

    /// The next frame, or `None` at end of stream.
    fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = proto::decode(&mut self.buf, 1 << 20).unwrap() {
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read within 5 s");
            if n == 0 {
                assert!(self.buf.is_empty(), "stream ended inside a frame");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn expect_error(&mut self, seq: u32, code: ErrorCode) {
        let f = self.recv().expect("an ERROR");
        assert_eq!((f.kind, f.seq), (Kind::Error, seq));
        assert_eq!(pb::Error::decode(f.body).unwrap().code, code as i32);
        assert!(self.recv().is_none(), "closed after the ERROR");
    }
}

fn login(uin: u64, device_id: u32, key: &TokenKey) -> pb::Login {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    pb::Login {
        uin,
        device_id,
        token: key
            .mint(uin, device_id, now.as_secs() + 3600)
            .to_vec()
            .into(),
        network: pb::NetworkType::Wifi as i32,
        client_version: "test".into(),
    }
}

#[test]
fn login_then_heartbeat_is_acked() {
    let server = Server::start("ok");
    let mut c = server.connect();
    c.send(Kind::Login, 7, &login(42, 1, &TokenKey::new(SECRET)));
    let f = c.recv().expect("LOGIN_ACK");
    assert_eq!((f.kind, f.seq), (Kind::LoginAck, 7));
    let ack = pb::LoginAck::decode(f.body).unwrap();
    assert_eq!(ack.heartbeat_ms, HEARTBEAT_MS);
    assert_eq!(ack.idle_timeout_ms, 3 * HEARTBEAT_MS);
    let sent = Instant::now();
    c.send(Kind::Heartbeat, 8, &pb::Heartbeat {});
    let f = c.recv().expect("HEARTBEAT_ACK");
    assert_eq!((f.kind, f.seq), (Kind::HeartbeatAck, 8));
    let ack = pb::HeartbeatAck::decode(f.body).unwrap();
    assert_eq!(ack.next_heartbeat_ms, HEARTBEAT_MS);
    // Rule 4: silence for the idle timeout closes the session, no ERROR,
    // and not before: the server's idle clock starts when it reads the
    // heartbeat, after `sent`. (The read timeout of 5 s bounds it above.)
    assert!(c.recv().is_none());
    let idle = Duration::from_millis(u64::from(ack.idle_timeout_ms));
    assert_eq!(idle, Duration::from_millis(3 * u64::from(HEARTBEAT_MS)));
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= idle,
        "closed {closed_after:?} after the heartbeat, before the idle timeout of {idle:?}"
    );
}

#[test]
fn bad_token_is_unauthenticated_and_closed() {
    let server = Server::start("bad-token");
    let mut c = server.connect();
    c.send(
        Kind::Login,
        3,
        &login(42, 1, &TokenKey::new(b"not the secret")),
    );
    c.expect_error(3, ErrorCode::Unauthenticated);
}

#[test]
fn a_first_frame_other_than_login_is_unauthenticated() {
    let server = Server::start("not-login");
    let mut c = server.connect();
    c.send(Kind::Heartbeat, 5, &pb::Heartbeat {});
    c.expect_error(5, ErrorCode::Unauthenticated);
}

#[test]
fn oversized_and_malformed_frames_are_refused() {
    let server = Server::start("limits");
    let key = TokenKey::new(SECRET);
    let mut c = server.connect();
    c.send(Kind::Login, 1, &login(42, 1, &key));
    assert_eq!(c.recv().unwrap().kind, Kind::LoginAck);
    // body_len 65,537, version 1, kind SEND, seq 9; no body follows.
    let header = hex_header(65_537, 1, 0x03, 9);
    c.stream.write_all(&header).unwrap();
    c.expect_error(9, ErrorCode::TooLarge);

    let mut c = server.connect();
    c.send(Kind::Login, 1, &login(43, 1, &key));
    assert_eq!(c.recv().unwrap().kind, Kind::LoginAck);
    c.stream.write_all(&hex_header(0, 2, 0x02, 4)).unwrap();
    c.expect_error(4, ErrorCode::BadFrame);

    let mut c = server.connect();
    c.send(Kind::Login, 1, &login(44, 1, &key));
    assert_eq!(c.recv().unwrap().kind, Kind::LoginAck);
    c.send(Kind::Login, 2, &login(44, 1, &key));
    c.expect_error(2, ErrorCode::BadFrame);
}

fn hex_header(body_len: u32, version: u8, kind: u8, seq: u32) -> Vec<u8> {
    let mut h = body_len.to_be_bytes().to_vec();
    h.extend([version, kind, 0, 0]);
    h.extend(seq.to_be_bytes());
    h
}
