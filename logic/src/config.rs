//! The logic server's configuration: one serde struct, filled from
//! defaults, then an optional `--config` TOML file, then command-line flags
//! (highest precedence).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::channel::Retention;
use crate::durable::FsyncMode;

/// The `data_dir` value that keeps all state in memory (not durable).
pub const MEMORY: &str = ":memory:";

/// Bytes one channel head can take in a SYNC_ACK: field tag and length
/// (2), then `channel` and `msg_id`, each a tag and a varint of up to 10.
pub const SYNC_ACK_BYTES_PER_HEAD: usize = 24;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// Every setting, with its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the link listener binds; gateways connect here.
    /// Default `127.0.0.1:7700`.
    pub listen: SocketAddr,
    /// Sets `SO_REUSEPORT` on the link listener, so that a replacement
    /// server can bind `listen` while another socket of the same user holds
    /// the port (the old server still exiting, or a supervisor keeping the
    /// port reserved across restarts). Leave it off otherwise: two logic
    /// servers listening on one port would split the gateways between
    /// them, each with half the routing state. Default false.
    pub reuse_port: bool,
    /// Shard worker threads; 0 means one per available core
    /// (`std::thread::available_parallelism`). Default 0.
    pub threads: usize,
    /// Messages retained per channel, newest first (PROTOCOL.md rule 9).
    /// Default 1,000.
    pub retention_count: usize,
    /// Maximum age of a retained message, in seconds (rule 9).
    /// Default 86,400 (24 hours).
    pub retention_secs: u64,
    /// Largest SEND `body`, in bytes; a larger one is answered TOO_LARGE and
    /// not stored. Default 32,768.
    pub max_send_body: usize,
    /// Largest client frame body accepted inside a link `Client` frame
    /// (rule 11's limit, normally enforced by the gateway first).
    /// Default 65,536.
    pub max_client_body: usize,
    /// Largest link frame accepted from a gateway (the `len` field).
    /// Default `proto::link::DEFAULT_MAX_LINK_FRAME` (1 MiB).
    pub max_link_frame: usize,
    /// Unsent bytes queued for one gateway before its link is closed as a
    /// slow consumer. Default 64 MiB.
    pub max_gateway_backlog: usize,
    /// Sets `TCP_NODELAY` on link sockets (batching is done by the server,
    /// so Nagle only adds delay). Default true.
    pub nodelay: bool,
    /// Address of the Prometheus `/metrics` endpoint; none by default.
    pub metrics: Option<SocketAddr>,
    /// Directory of the durable state (created if missing; one logic
    /// server per directory, enforced by `DIR/logic.lock`). `:memory:`
    /// keeps everything in memory: NOT durable, a restart forgets all
    /// messages, counters, dedup state and memberships (tests and
    /// benchmarks). Default `./millgate-data`.
    pub data_dir: PathBuf,
    /// When a SEND is acknowledged: `batch` once the write reached the OS
    /// (survives kill -9 and a logic crash; a power loss loses at most the
    /// last `fsync_interval_ms`), `always` only after fdatasync (survives
    /// power loss; group commit, each ACK waits for one sync). Default
    /// `batch`.
    pub fsync: FsyncMode,
    /// In `batch` mode, the background fdatasync runs at least this often
    /// (ms) when anything was written. Default 100.
    pub fsync_interval_ms: u64,
    /// Rooms one user may be in; a JOIN past it is answered TOO_LARGE.
    /// Bounds the SYNC_ACK (24 bytes per room, plus the inbox) within the
    /// client's maximum body: at most 2,729 with the default 65,536.
    /// Default 1,000.
    pub max_rooms_per_user: usize,
    /// A loaded channel unused for this long (seconds) is evicted from
    /// memory (its counter and newest messages reload from the store when
    /// next used); users are evicted when their last session ends.
    /// Checked every 5 s. Default 30.
    pub evict_idle_secs: u64,
    /// Keep all state (router, counters, retained messages, dedup,
    /// membership) in this Redis instead of the embedded store, so that any
    /// number of logic nodes can share it (`logic/REDIS.md`): a URL like
    /// `redis://127.0.0.1:6379/0`. `data_dir`, `fsync` and
    /// `evict_idle_secs` do not apply then (durability is Redis's: run it
    /// with `appendonly yes`). The node refuses to start when the URL is
    /// bad or Redis is unreachable. None by default (the embedded store).
    pub redis: Option<String>,
    /// Connect, read and write timeout of every Redis call (ms): a Redis
    /// that does not answer within it makes the request answer
    /// UNAVAILABLE (PROTOCOL.md rule 13). Default 500.
    pub redis_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            reuse_port: false,
            threads: 0,
            retention_count: 1_000,
            retention_secs: 86_400,
            max_send_body: 32_768,
            max_client_body: proto::codec::DEFAULT_MAX_BODY,
            max_link_frame: proto::link::DEFAULT_MAX_LINK_FRAME,
            max_gateway_backlog: 64 << 20,
            nodelay: true,
            metrics: None,
            data_dir: PathBuf::from("./millgate-data"),
            fsync: FsyncMode::Batch,
            fsync_interval_ms: 100,
            max_rooms_per_user: 1_000,
            evict_idle_secs: 30,
            redis: None,
            redis_timeout_ms: 500,
        }
    }
}

/// Command-line flags; each overrides the file and the default.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "logic",
    about = "Millgate logic server: router, counters, stores, fan-out"
)]
pub struct Cli {
    /// TOML file with any of the settings (field names as in `Config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Link listener address (gateways connect here).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Set SO_REUSEPORT on the link listener (a restart while another
    /// socket holds the port; never two servers at once).
    #[arg(long)]
    pub reuse_port: Option<bool>,
    /// Shard threads (0 = one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Messages retained per channel.
    #[arg(long)]
    pub retention_count: Option<usize>,
    /// Maximum age of retained messages, seconds.
    #[arg(long)]
    pub retention_secs: Option<u64>,
    /// Largest SEND body in bytes.
    #[arg(long)]
    pub max_send_body: Option<usize>,
    /// Prometheus endpoint address (serves GET /metrics).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Durable state directory (`:memory:`: in memory, NOT durable).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// When SENDs are acknowledged: batch (written to the OS) or always
    /// (after fdatasync).
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncMode>,
    /// Background fdatasync interval in batch mode, ms.
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Rooms one user may join.
    #[arg(long)]
    pub max_rooms_per_user: Option<usize>,
    /// Seconds before an unused channel is evicted from memory.
    #[arg(long)]
    pub evict_idle_secs: Option<u64>,
    /// Keep all state in this Redis (redis://HOST:PORT[/DB]) so that
    /// several logic nodes share it; default: the embedded store.
    #[arg(long)]
    pub redis: Option<String>,
    /// Timeout of every Redis call, ms (then UNAVAILABLE).
    #[arg(long)]
    pub redis_timeout_ms: Option<u64>,
}

impl Config {
    /// Defaults, then the `--config` file if any, then the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut cfg = match &cli.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = cli.listen {
            cfg.listen = v;
        }
        if let Some(v) = cli.reuse_port {
            cfg.reuse_port = v;
        }
        if let Some(v) = cli.threads {
            cfg.threads = v;
        }
        if let Some(v) = cli.retention_count {
            cfg.retention_count = v;
        }
        if let Some(v) = cli.retention_secs {
            cfg.retention_secs = v;
        }
        if let Some(v) = cli.max_send_body {
            cfg.max_send_body = v;
        }
        if cli.metrics.is_some() {
            cfg.metrics = cli.metrics;
        }
        if let Some(v) = &cli.data_dir {
            cfg.data_dir = v.clone();
        }
        if let Some(v) = cli.fsync {
            cfg.fsync = v;
        }
        if let Some(v) = cli.fsync_interval_ms {
            cfg.fsync_interval_ms = v;
        }
        if let Some(v) = cli.max_rooms_per_user {
            cfg.max_rooms_per_user = v;
        }
        if let Some(v) = cli.evict_idle_secs {
            cfg.evict_idle_secs = v;
        }
        if cli.redis.is_some() {
            cfg.redis = cli.redis.clone();
        }
        if let Some(v) = cli.redis_timeout_ms {
            cfg.redis_timeout_ms = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML file; absent fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_link_frame < self.max_client_body + 64 {
            return Err(ConfigError::Invalid(
                "max_link_frame must exceed max_client_body + 64",
            ));
        }
        if (self.max_rooms_per_user + 1) * SYNC_ACK_BYTES_PER_HEAD > self.max_client_body {
            return Err(ConfigError::Invalid(
                "max_rooms_per_user is too large: a SYNC_ACK listing every room would exceed max_client_body",
            ));
        }
        if self.fsync_interval_ms == 0 {
            return Err(ConfigError::Invalid("fsync_interval_ms must be at least 1"));
        }
        Ok(())
    }

    /// The shard count: `threads`, or the number of cores when 0.
    pub fn shard_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// Whether state is kept in memory only (`data_dir` = `:memory:`).
    pub fn in_memory(&self) -> bool {
        self.data_dir.as_os_str() == MEMORY
    }

    /// The retention limits.
    pub fn retention(&self) -> Retention {
        Retention {
            max_count: self.retention_count,
            max_age_ms: self.retention_secs.saturating_mul(1_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("logic-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("logic.toml");
        std::fs::write(&path, "threads = 3\nretention_count = 10\n").expect("write");
        let cli = Cli {
            config: Some(path),
            retention_count: Some(20),
            ..Cli::default()
        };
        let cfg = Config::load(&cli).expect("loads");
        assert_eq!(cfg.threads, 3);
        assert_eq!(cfg.retention_count, 20);
        assert_eq!(cfg.retention_secs, 86_400);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn the_room_cap_must_keep_sync_ack_within_the_max_body() {
        let ok = Config {
            max_rooms_per_user: 2_729,
            ..Config::default()
        };
        assert!(ok.validate().is_ok());
        let too_many = Config {
            max_rooms_per_user: 2_730,
            ..Config::default()
        };
        assert!(too_many.validate().is_err());
        assert_eq!(Config::default().max_rooms_per_user, 1_000);
    }

    #[test]
    fn durable_by_default_and_memory_on_request() {
        let cfg = Config::default();
        assert!(!cfg.in_memory());
        assert_eq!(cfg.fsync, FsyncMode::Batch);
        let cfg = Config {
            data_dir: PathBuf::from(MEMORY),
            ..Config::default()
        };
        assert!(cfg.in_memory());
        let parsed: Config = toml::from_str("fsync = \"always\"\ndata_dir = \"/x\"").expect("toml");
        assert_eq!(parsed.fsync, FsyncMode::Always);
    }

    #[test]
    fn unknown_field_is_an_error() {
        assert!(toml::from_str::<Config>("thread = 3").is_err());
    }
}
