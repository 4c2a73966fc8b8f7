//! A real `redis-server` for one test: a free loopback port, a temp dir,
//! no persistence (`--save '' --appendonly no`), ready once it answers
//! PING (polled, no fixed sleep), stopped by PID on drop. The Debian
//! package `redis-server` provides the binary (`.ci/run` installs it).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a redis-server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running redis-server, killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Redis {
    /// Starts a redis-server on a free port.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts one with `extra` arguments (e.g. cluster mode) on a free
    /// port. redis-server cannot bind port 0 and say which port it got, so
    /// the port is found by binding and releasing it; someone else may take
    /// it before redis-server binds it, and then redis-server exits at
    /// once: another port is tried.
    pub fn start_with(extra: &[&str]) -> Redis {
        for _ in 0..10 {
            let mut r = Redis::unstarted(free_port(), extra);
            if r.try_spawn() {
                return r;
            }
        }
        panic!("redis-server exited at start on 10 ports in a row");
    }

    /// Starts one on `port`.
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let mut r = Redis::unstarted(port, extra);
        r.spawn();
        r
    }

    /// Starts one on `port`, or None if redis-server exits at once (the
    /// port is taken).
    pub fn try_start_on(port: u16, extra: &[&str]) -> Option<Redis> {
        let mut r = Redis::unstarted(port, extra);
        r.try_spawn().then_some(r)
    }

    fn unstarted(port: u16, extra: &[&str]) -> Redis {
        Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("redis dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server on port {} exited at start",
            self.port
        );
    }

    /// Starts redis-server and waits for it to answer; false if it exited
    /// first (its port was taken).
    fn try_spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls PING until it answers PONG (true) or the server exits
    /// (false), failing after [`READY_TIMEOUT`].
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(self.port) {
                return true;
            }
            let child = self.child.as_mut().expect("spawned");
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5)); // polling a child: no event to await
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A client connection for inspecting or changing state directly.
    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to test redis")
    }

    /// Kills the server (SIGKILL by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Keys held by this server.
    pub fn dbsize(&self) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.con()).expect("dbsize")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when something on `port` answers `PING` with `+PONG`.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A loopback port free for a cluster node: it and its cluster bus port
/// (port + 10000) both bindable.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        let p = 20_000 + p % 20_000;
        let ok = |q: u16| TcpListener::bind(("127.0.0.1", q)).is_ok();
        if ok(p) && ok(p + 10_000) {
            return p;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// A Redis Cluster of `n` masters on loopback, created with
/// `redis-cli --cluster create ... --cluster-yes`, ready once every node
/// reports `cluster_state:ok` (polled).
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let flags = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        let nodes: Vec<Redis> = (0..n)
            .map(|_| Redis::start_on(free_cluster_port(), &flags))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let mut create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-cli on PATH");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = create.try_wait().expect("try_wait") {
                assert!(st.success(), "redis-cli --cluster create failed");
                break;
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                panic!("redis-cli --cluster create did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let c = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.nodes.iter().all(|r| {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut r.con())
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "cluster not ok in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    /// The first node's URL (the logic node discovers the others).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// A cluster client connection (routes each key to its master).
    pub fn con(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(vec![self.url()])
            .expect("cluster client")
            .get_connection()
            .expect("cluster connection")
    }
}
