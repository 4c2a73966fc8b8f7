//! Command-line flags. Each flag overrides the same field of the config
//! file (or of the defaults, documented on [`Config`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

/// Millgate gateway: holds client sessions and forwards them to the logic
/// tier.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a login token (hex) for a uin and device.
    Token {
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long)]
        uin: u64,
        #[arg(long)]
        device: u32,
        /// Seconds from now until the token expires.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Check this machine's kernel settings and limits for N sessions.
    Doctor {
        #[arg(long, default_value_t = 1_000_000)]
        sessions: u64,
    },
}

/// Flags of the server itself.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML configuration file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address (every worker binds it with SO_REUSEPORT).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// File with the HMAC secret for login tokens (one trailing newline
    /// removed).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Starting heartbeat interval for every network type.
    #[arg(long)]
    pub heartbeat_ms: Option<u32>,
    /// Adapt the heartbeat interval (rule 5): true or false.
    #[arg(long)]
    pub adaptive_heartbeat: Option<bool>,
    /// Fixed idle timeout instead of 3 x the heartbeat interval.
    #[arg(long)]
    pub idle_timeout_ms: Option<u32>,
    /// Largest frame body accepted.
    #[arg(long)]
    pub max_body: Option<usize>,
    /// Time allowed from accept to LOGIN.
    #[arg(long)]
    pub login_timeout_ms: Option<u32>,
    /// Drain window on SIGTERM.
    #[arg(long)]
    pub drain_ms: Option<u64>,
    /// listen(2) backlog per worker socket.
    #[arg(long)]
    pub backlog: Option<i32>,
    /// SO_RCVBUF for client sockets.
    #[arg(long)]
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF for client sockets (0: the kernel's autotuning).
    #[arg(long)]
    pub send_buffer: Option<usize>,
    /// SEND rate limit per session (per second).
    #[arg(long)]
    pub send_rate: Option<u32>,
    /// SEND burst per session.
    #[arg(long)]
    pub send_burst: Option<u32>,
    /// JOIN rate limit per session (per second).
    #[arg(long)]
    pub join_rate: Option<u32>,
    /// JOIN burst per session.
    #[arg(long)]
    pub join_burst: Option<u32>,
    /// LEAVE rate limit per session (per second).
    #[arg(long)]
    pub leave_rate: Option<u32>,
    /// LEAVE burst per session.
    #[arg(long)]
    pub leave_burst: Option<u32>,
    /// SYNC rate limit per session (per second).
    #[arg(long)]
    pub sync_rate: Option<u32>,
    /// SYNC burst per session.
    #[arg(long)]
    pub sync_burst: Option<u32>,
    /// Entries in the gateway's rate-limit table, shared by its workers
    /// (buckets kept across a reconnect, and the JOIN/LEAVE/SYNC buckets).
    #[arg(long)]
    pub rate_table_capacity: Option<usize>,
    /// At the open-file limit, how long a pending connection waits for a
    /// descriptor before it is refused (0: at once).
    #[arg(long)]
    pub emfile_grace_ms: Option<u64>,
    /// Timer wheel tick.
    #[arg(long)]
    pub tick_ms: Option<u32>,
    /// Prometheus endpoint address (serves GET /metrics).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Logic node addresses, comma-separated: one link at a time, moving
    /// to the next when it ends (nodes sharing one state).
    #[arg(long, value_delimiter = ',')]
    pub logic: Vec<SocketAddr>,
    /// Capacity (items) of each worker's queues to and from the uplink.
    #[arg(long)]
    pub uplink_queue: Option<usize>,
    /// Deadline for a request forwarded to the logic tier (then
    /// UNAVAILABLE).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Interval between the uplink's pings.
    #[arg(long)]
    pub ping_interval_ms: Option<u64>,
    /// Ping intervals with nothing heard after which the link is down.
    #[arg(long)]
    pub missed_pongs: Option<u32>,
    /// With --logic: accept no client until the link is up or this long
    /// after start.
    #[arg(long)]
    pub link_grace_ms: Option<u64>,
    /// Bytes queued for one session beyond which it is a slow consumer
    /// (KICK SLOW_CONSUMER and close).
    #[arg(long)]
    pub write_budget: Option<usize>,
}

impl RunArgs {
    /// Applies the flags given over `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        set(&mut cfg.listen, &self.listen);
        set(&mut cfg.threads, &self.threads);
        if self.secret_file.is_some() {
            cfg.secret_file.clone_from(&self.secret_file);
        }
        if let Some(ms) = self.heartbeat_ms {
            cfg.heartbeat.set_all_starting(ms);
        }
        set(&mut cfg.heartbeat.adaptive, &self.adaptive_heartbeat);
        if self.idle_timeout_ms.is_some() {
            cfg.heartbeat.idle_timeout_ms = self.idle_timeout_ms;
        }
        set(&mut cfg.max_body, &self.max_body);
        set(&mut cfg.login_timeout_ms, &self.login_timeout_ms);
        set(&mut cfg.drain_ms, &self.drain_ms);
        set(&mut cfg.backlog, &self.backlog);
        if self.recv_buffer.is_some() {
            cfg.recv_buffer = self.recv_buffer;
        }
        set(&mut cfg.send_buffer, &self.send_buffer);
        set(&mut cfg.rate.per_sec, &self.send_rate);
        set(&mut cfg.rate.burst, &self.send_burst);
        set(&mut cfg.join_rate.per_sec, &self.join_rate);
        set(&mut cfg.join_rate.burst, &self.join_burst);
        set(&mut cfg.leave_rate.per_sec, &self.leave_rate);
        set(&mut cfg.leave_rate.burst, &self.leave_burst);
        set(&mut cfg.sync_rate.per_sec, &self.sync_rate);
        set(&mut cfg.sync_rate.burst, &self.sync_burst);
        set(&mut cfg.rate_table_capacity, &self.rate_table_capacity);
        set(&mut cfg.emfile_grace_ms, &self.emfile_grace_ms);
        set(&mut cfg.tick_ms, &self.tick_ms);
        set(&mut cfg.write_budget, &self.write_budget);
        set(&mut cfg.uplink_queue, &self.uplink_queue);
        set(&mut cfg.request_timeout_ms, &self.request_timeout_ms);
        set(&mut cfg.ping_interval_ms, &self.ping_interval_ms);
        set(&mut cfg.missed_pongs, &self.missed_pongs);
        set(&mut cfg.link_grace_ms, &self.link_grace_ms);
        if self.metrics.is_some() {
            cfg.metrics = self.metrics;
        }
        if !self.logic.is_empty() {
            cfg.logic = self.logic.clone();
        }
    }

    /// The config file (if any) with these flags applied.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut cfg);
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_and_heartbeat_ms_sets_every_network() {
        let cli = Cli::parse_from([
            "gateway",
            "--listen",
            "127.0.0.1:1",
            "--heartbeat-ms",
            "1234",
            "--adaptive-heartbeat",
            "false",
            "--secret-file",
            "/x",
            "--join-rate",
            "3",
            "--sync-burst",
            "4",
            "--send-buffer",
            "0",
            "--request-timeout-ms",
            "700",
            "--link-grace-ms",
            "0",
        ]);
        let cfg = cli.run.load().unwrap();
        assert_eq!((cfg.join_rate.per_sec, cfg.join_rate.burst), (3, 50));
        assert_eq!((cfg.sync_rate.per_sec, cfg.sync_rate.burst), (2, 4));
        assert_eq!(cfg.send_buffer, 0);
        assert_eq!((cfg.request_timeout_ms, cfg.link_grace_ms), (700, 0));
        assert_eq!((cfg.ping_interval_ms, cfg.missed_pongs), (1_000, 3));
        assert_eq!(cfg.listen, "127.0.0.1:1".parse().unwrap());
        assert!(!cfg.heartbeat.adaptive);
        assert_eq!(cfg.heartbeat.wired_ms, 1234);
        assert_eq!(cfg.heartbeat.cell_2g_ms, 1234);
        assert_eq!(cfg.secret_file, Some(PathBuf::from("/x")));
        assert_eq!(cfg.max_body, 65_536);
    }

    #[test]
    fn token_subcommand_parses() {
        let cli = Cli::parse_from([
            "gateway",
            "token",
            "--secret-file",
            "s",
            "--uin",
            "5",
            "--device",
            "2",
            "--ttl-secs",
            "60",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::Token {
                uin: 5,
                device: 2,
                ttl_secs: 60,
                ..
            })
        ));
    }
}
