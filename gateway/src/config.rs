//! The gateway's one configuration struct: defaults, an optional TOML file,
//! and command-line flags on top (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::heartbeat::HeartbeatPolicy;
use crate::ratelimit::{Limits, RateLimit};

/// Everything the `gateway` binary can be told. Each field shows its
/// default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every worker's listening socket binds, each with
    /// SO_REUSEPORT so the kernel spreads accepts over workers (and over
    /// several gateway processes on one port). Default `0.0.0.0:7000`.
    pub listen: SocketAddr,
    /// Worker threads, each with its own poll, listener, slab and wheel.
    /// 0 means one per core. Default 0.
    pub threads: usize,
    /// listen(2) backlog per worker socket; the kernel caps it at
    /// `net.core.somaxconn`. Default 4096.
    pub backlog: i32,
    /// SO_RCVBUF for client sockets, set on the listener and inherited by
    /// accepted sockets. Default none (the kernel's `tcp_rmem` default).
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF for client sockets, likewise (bytes; Linux reserves twice
    /// this, its own overhead included, and turns off send-buffer
    /// autotuning for the socket). Part of the slow-consumer bound: a
    /// session pins at most `write_budget` + one frame in user space plus
    /// this in the kernel (see `write_budget`). 0 leaves the kernel's
    /// `tcp_wmem` autotuning (up to 4 MiB per socket). Default 131,072
    /// (128 KiB).
    pub send_buffer: usize,
    /// TCP_NODELAY on client sockets (set on the listener; Linux copies it
    /// to accepted sockets). Default true: replies are small and latency
    /// matters more than segment count.
    pub nodelay: bool,
    /// File holding the HMAC secret for login tokens: its bytes, with one
    /// trailing newline removed. Required.
    pub secret_file: Option<PathBuf>,
    /// Largest accepted frame body (rule 11). Default 65,536.
    pub max_body: usize,
    /// Time allowed from accept to LOGIN (rule 1). Default 10,000 ms.
    pub login_timeout_ms: u32,
    /// Heartbeat intervals, adaptation and idle timeout (rules 4 and 5).
    pub heartbeat: HeartbeatPolicy,
    /// SEND rate limit per session (rule 10): `[rate]`, default 20 per
    /// second, bursts of 40.
    pub rate: RateLimit,
    /// JOIN rate limit per session: `[join_rate]`, default 10 per second,
    /// bursts of 50. Over it, JOIN_ACK(`RATE_LIMITED`).
    #[serde(default = "join_default")]
    pub join_rate: RateLimit,
    /// LEAVE rate limit per session: `[leave_rate]`, default 10 per second,
    /// bursts of 50. Over it, LEAVE_ACK(`RATE_LIMITED`).
    #[serde(default = "leave_default")]
    pub leave_rate: RateLimit,
    /// SYNC rate limit per session: `[sync_rate]`, default 2 per second,
    /// bursts of 10. Over it, ERROR(`UNAVAILABLE`) (SYNC_ACK has no status;
    /// the ERROR does not close).
    #[serde(default = "sync_default")]
    pub sync_rate: RateLimit,
    /// Entries in the gateway's table (shared by its workers) that keeps
    /// rate-limit buckets past a session's end (so a reconnect, onto any
    /// worker, does not refill them) and the JOIN, LEAVE and SYNC buckets
    /// of live sessions; about 40 bytes each. An entry lives only until
    /// its buckets have refilled. Default 262,144 (about 10 MiB at most).
    pub rate_table_capacity: usize,
    /// Drain window on SIGTERM (rule 12): GOAWAY delays and closes are
    /// spread over it. Default 30,000 ms.
    pub drain_ms: u64,
    /// After an ERROR that closes a connection, keep discarding the
    /// client's input this long so the ERROR is not lost to a reset.
    /// Default 2,000 ms.
    pub linger_ms: u32,
    /// Timer wheel tick. Expiry is late by at most one tick. Default 100 ms.
    pub tick_ms: u32,
    /// Timer wheel slots per worker (a power of two). With the default
    /// tick this is a 409 s horizon; longer deadlines are re-armed lazily.
    /// Default 4096.
    pub wheel_slots: usize,
    /// Most connections one worker holds; further accepts are closed at
    /// once. Default 4,000,000.
    pub max_connections_per_thread: usize,
    /// Address of the Prometheus text endpoint (`GET /metrics`). Default
    /// none (off).
    pub metrics: Option<SocketAddr>,
    /// The logic nodes (one, or several sharing one state: issue 14's
    /// Redis mode), as a list or one comma-separated string. The gateway
    /// links to one at a time and moves to the next when its link ends
    /// (`nodes.rs`). Default none: every backend request is answered
    /// UNAVAILABLE (rule 13).
    #[serde(deserialize_with = "addr_list")]
    pub logic: Vec<SocketAddr>,
    /// Capacity of each worker's queues to and from the uplink (items).
    /// A request that finds the up-queue full is answered UNAVAILABLE
    /// (rule 13); the worker never stops reading. Default 65,536.
    pub uplink_queue: usize,
    /// A request forwarded to the logic tier (SEND, JOIN, LEAVE, SYNC) is
    /// answered within this long of being written to the link: UNAVAILABLE
    /// (rule 13) when the logic server said nothing in time; an answer
    /// that comes later is dropped. Default 5,000 ms.
    pub request_timeout_ms: u64,
    /// The uplink pings its link this often. Default 1,000 ms.
    pub ping_interval_ms: u64,
    /// The link is declared down when nothing (no `Pong`, no other frame)
    /// has come back for this many ping intervals. Default 3.
    pub missed_pongs: u32,
    /// With `logic` set, no client is accepted until the link is up or
    /// this long after start, whichever comes first (early clients wait
    /// in the listen backlog). Default 2,000 ms.
    pub link_grace_ms: u64,
    /// Output queued for one session (bytes) beyond which it is a slow
    /// consumer: what is queued behind the frame being written is dropped,
    /// KICK(SLOW_CONSUMER) goes right behind that frame, and the
    /// connection closes once it is written (or after `linger_ms`). With
    /// `send_buffer`, a session's output pins at most `write_budget` + one
    /// frame + 2 x `send_buffer` (kernel). Default 1 MiB.
    pub write_budget: usize,
    /// At the open-file limit (EMFILE/ENFILE), how long a pending
    /// connection may wait in the backlog for a descriptor to free up
    /// (accepts are retried after every close and on every loop turn)
    /// before it is refused: accepted on a spare descriptor and closed at
    /// once, so the client sees the connection end instead of hanging.
    /// 0 refuses at once. Default 250 ms.
    pub emfile_grace_ms: u64,
}

/// `logic` from TOML: a list of addresses, or one string of
/// comma-separated ones (`logic = "10.0.0.1:7100"` from before lists).
fn addr_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<SocketAddr>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => Ok(v),
        OneOrMany::One(s) => s
            .split(',')
            .map(|a| a.trim().parse().map_err(serde::de::Error::custom))
            .collect(),
    }
}

fn join_default() -> RateLimit {
    RateLimit::JOIN
}

fn leave_default() -> RateLimit {
    RateLimit::LEAVE
}

fn sync_default() -> RateLimit {
    RateLimit::SYNC
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            threads: 0,
            backlog: 4096,
            recv_buffer: None,
            send_buffer: 128 << 10,
            nodelay: true,
            secret_file: None,
            max_body: proto::codec::DEFAULT_MAX_BODY,
            login_timeout_ms: 10_000,
            heartbeat: HeartbeatPolicy::default(),
            rate: RateLimit::default(),
            join_rate: RateLimit::JOIN,
            leave_rate: RateLimit::LEAVE,
            sync_rate: RateLimit::SYNC,
            rate_table_capacity: 262_144,
            drain_ms: 30_000,
            linger_ms: 2_000,
            tick_ms: 100,
            wheel_slots: 4096,
            max_connections_per_thread: 4_000_000,
            metrics: None,
            logic: Vec::new(),
            uplink_queue: 65_536,
            request_timeout_ms: 5_000,
            ping_interval_ms: 1_000,
            missed_pongs: 3,
            link_grace_ms: 2_000,
            write_budget: 1 << 20,
            emfile_grace_ms: 250,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("no secret: set --secret-file (or secret_file in the config file)")]
    NoSecret,
    #[error("the secret file {0} is empty")]
    EmptySecret(PathBuf),
}

impl Config {
    /// Loads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Every per-session rate limit.
    pub fn limits(&self) -> Limits {
        Limits {
            send: self.rate,
            join: self.join_rate,
            leave: self.leave_rate,
            sync: self.sync_rate,
        }
    }

    /// Worker threads to start.
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Reads the HMAC secret named by `secret_file`.
    pub fn read_secret(&self) -> Result<Vec<u8>, ConfigError> {
        let path = self.secret_file.as_ref().ok_or(ConfigError::NoSecret)?;
        read_secret_file(path)
    }
}

/// The secret in `path`: its bytes with one trailing newline removed.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(ConfigError::EmptySecret(path.to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_file_overrides_only_what_it_names() {
        let dir = std::env::temp_dir().join(format!("millgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nthreads = 2\n[heartbeat]\nwired_ms = 5000\n[rate]\nper_sec = 5\n",
        )
        .unwrap();
        let cfg = Config::from_file(&path).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.threads, 2);
        assert_eq!(cfg.heartbeat.wired_ms, 5000);
        assert_eq!(cfg.heartbeat.wifi_ms, 30_000);
        assert_eq!(
            cfg.rate,
            RateLimit {
                per_sec: 5,
                burst: 40
            }
        );
        assert_eq!(cfg.max_body, 65_536);
        assert_eq!(cfg.join_rate, RateLimit::JOIN);
        assert_eq!(cfg.send_buffer, 128 << 10);
        std::fs::write(
            &path,
            "send_buffer = 0\n[sync_rate]\nper_sec = 1\nburst = 3\n",
        )
        .unwrap();
        let cfg = Config::from_file(&path).unwrap();
        assert_eq!((cfg.sync_rate.per_sec, cfg.sync_rate.burst), (1, 3));
        assert_eq!(cfg.leave_rate, RateLimit::LEAVE);
        assert_eq!(cfg.send_buffer, 0);
        std::fs::write(&path, "logic = \"127.0.0.1:1, 127.0.0.1:2\"\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().logic.len(), 2);
        std::fs::write(&path, "logic = [\"127.0.0.1:1\"]\n").unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap().logic,
            ["127.0.0.1:1".parse().unwrap()]
        );
        std::fs::write(&path, "logic = \"127.0.0.1\"\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn the_secret_loses_exactly_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("millgate-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, b"abc\n\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), b"abc\n");
        std::fs::write(&path, b"\n").unwrap();
        assert!(matches!(
            read_secret_file(&path),
            Err(ConfigError::EmptySecret(_))
        ));
        let cfg = Config::default();
        assert!(matches!(cfg.read_secret(), Err(ConfigError::NoSecret)));
    }
}
