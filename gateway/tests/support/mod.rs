//! Test support: start the real `gateway` binary on a loopback port and
//! speak PROTOCOL.md to it over real sockets.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::pb;
use proto::{Frame, Kind, TokenKey};

pub mod fake_logic;

pub const SECRET: &[u8] = b"integration test secret";

/// A gateway process, killed (by PID) when dropped.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("millgate-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Gateway {
    /// Starts `gateway --listen 127.0.0.1:0 --secret-file ... <extra>` and
    /// waits for its "listening on" line.
    pub fn start(extra: &[&str]) -> Gateway {
        Gateway::start_under(&[], extra)
    }

    /// Like `start`, run through `wrapper` (a command that execs the rest
    /// of its arguments, e.g. `prlimit --nofile=64 --`), so the PID is
    /// still the gateway's.
    pub fn start_under(wrapper: &[&str], extra: &[&str]) -> Gateway {
        let dir = TempDir::new("gw");
        let secret = dir.0.join("secret");
        // A trailing newline, which the gateway must strip.
        let mut bytes = SECRET.to_vec();
        bytes.push(b'\n');
        std::fs::write(&secret, bytes).unwrap();
        let bin = env!("CARGO_BIN_EXE_gateway");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--secret-file"])
            .arg(&secret)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway");
        let mut line = Vec::new();
        let mut out = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let mut words = line.split_whitespace();
        let addr = words.nth(3).expect("listening line").parse().unwrap();
        let metrics = words.nth(2).map(|m| m.parse().unwrap());
        Gateway {
            child,
            addr,
            metrics,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `sig` to the gateway.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20)); // polling a child: no event to await
        }
    }

    /// Fetches `/metrics` and returns the value of the line `name`.
    pub fn metric(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.metrics.expect("metrics enabled")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(uin: u64, device: u32, expires_at: u64) -> Bytes {
    Bytes::copy_from_slice(&TokenKey::new(SECRET).mint(uin, device, expires_at))
}

pub fn login_msg(uin: u64, device: u32, network: pb::NetworkType) -> pb::Login {
    pb::Login {
        uin,
        device_id: device,
        token: token(uin, device, unix_now() + 600),
        network: network as i32,
        client_version: "it/1".into(),
    }
}

pub fn frame_bytes(kind: Kind, seq: u32, msg: &impl Message) -> BytesMut {
    let mut out = BytesMut::new();
    proto::encode(&mut out, kind, seq, msg);
    out
}

/// A blocking test client.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).unwrap())
    }

    /// A client on an already connected socket.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn send(&mut self, kind: Kind, seq: u32, msg: &impl Message) {
        self.stream.write_all(&frame_bytes(kind, seq, msg)).unwrap();
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or None if the server closed the connection.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = proto::decode(&mut self.buf, 1 << 20).unwrap() {
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn expect<M: Message + Default>(&mut self, kind: Kind, seq: u32) -> M {
        let f = self.recv().expect("a frame, not a close");
        assert_eq!((f.kind, f.seq), (kind, seq), "unexpected frame {f:?}");
        M::decode(f.body).unwrap()
    }

    pub fn expect_error(&mut self, seq: u32) -> pb::error::ErrorCode {
        let e: pb::Error = self.expect(Kind::Error, seq);
        pb::error::ErrorCode::try_from(e.code).unwrap()
    }

    /// Asserts the server closes the connection with nothing more sent.
    pub fn expect_closed(&mut self) {
        if let Some(f) = self.recv() {
            panic!("expected a close, got {f:?}");
        }
    }

    pub fn login(&mut self, uin: u64, device: u32, network: pb::NetworkType) -> pb::LoginAck {
        self.send(Kind::Login, 1, &login_msg(uin, device, network));
        self.expect(Kind::LoginAck, 1)
    }
}

/// The `logic` binary, built beside this package's binaries by
/// `cargo test --workspace` (the README's test command).
pub fn logic_bin() -> std::path::PathBuf {
    let gw = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gateway"));
    let logic = gw.with_file_name("logic");
    assert!(
        logic.exists(),
        "{} is missing: run the workspace tests (cargo test --workspace)",
        logic.display()
    );
    logic
}

/// A logic server process, killed (by PID) when dropped.
pub struct Logic {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Logic {
    /// Starts `logic --listen ADDR` and waits for its "listening" line.
    pub fn start(listen: &str) -> Logic {
        Logic::start_with(listen, &[])
    }

    /// Starts `logic --listen ADDR <extra>` and waits for its "listening"
    /// line.
    pub fn start_with(listen: &str, extra: &[&str]) -> Logic {
        let mut child = Command::new(logic_bin())
            .args(["--listen", listen, "--threads", "2"])
            .args(["--data-dir", ":memory:"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start logic");
        let mut out = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let addr = line
            .split_whitespace()
            .nth(1)
            .expect("listening line")
            .parse()
            .unwrap();
        Logic { child, addr }
    }
}

impl Drop for Logic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
