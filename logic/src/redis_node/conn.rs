//! One worker's connection to Redis: opened with a connect timeout, every
//! call bounded by a read/write timeout, scripts loaded on each new
//! connection, and re-opened lazily (at most every [`RECONNECT_EVERY`])
//! after a failure, so a Redis that is gone costs a request at most one
//! timeout and never a hang (PROTOCOL.md rule 13).
//!
//! The same code drives a single Redis and a Redis Cluster ([`Target`]):
//! every command names its keys, and the cluster client routes each to
//! its slot's master (`SCRIPT LOAD` goes to every master).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Cmd, RedisError, RedisResult, Value};

use super::scripts::Scripts;

/// Least time between two connection attempts after a failure: requests
/// in between are answered UNAVAILABLE at once.
pub const RECONNECT_EVERY: Duration = Duration::from_millis(100);

/// Where the state lives: one Redis, or a Redis Cluster (detected at
/// start from `INFO cluster`).
#[derive(Clone)]
pub enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Single(_) => "Single",
            Target::Cluster(_) => "Cluster",
        })
    }
}

/// An open connection to a [`Target`].
pub enum Live {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Live {
    fn con(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Live::Single(c) => c,
            Live::Cluster(c) => &mut **c,
        }
    }
}

/// A connection that may be down.
pub struct Conn {
    target: Target,
    timeout: Duration,
    scripts: Arc<Scripts>,
    con: Option<Live>,
    last_try: Option<Instant>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("up", &self.con.is_some())
            .finish()
    }
}

/// Opens a connection with `timeout` for connect, reads and writes, and
/// loads every script on it (on every master of a cluster).
pub fn open(target: &Target, timeout: Duration, scripts: &Scripts) -> RedisResult<Live> {
    let mut live = match target {
        Target::Single(client) => {
            let con = client.get_connection_with_timeout(timeout)?;
            con.set_read_timeout(Some(timeout))?;
            con.set_write_timeout(Some(timeout))?;
            Live::Single(con)
        }
        Target::Cluster(client) => Live::Cluster(Box::new(client.get_connection()?)),
    };
    for src in scripts.sources() {
        redis::cmd("SCRIPT").arg("LOAD").arg(src).exec(live.con())?;
    }
    Ok(live)
}

/// The target `url` names: a cluster when `INFO cluster` says so. Fails
/// when Redis cannot be reached.
pub fn detect(url: &str, client: redis::Client, timeout: Duration) -> RedisResult<Target> {
    let mut con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut con)?;
    if info.contains("cluster_enabled:1") {
        let c = redis::cluster::ClusterClient::builder(vec![url])
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()?;
        Ok(Target::Cluster(c))
    } else {
        Ok(Target::Single(client))
    }
}

impl Conn {
    /// A connection to `client`'s Redis, opened when first used.
    pub fn new(target: Target, timeout: Duration, scripts: Arc<Scripts>) -> Conn {
        Conn {
            target,
            timeout,
            scripts,
            con: None,
            last_try: None,
        }
    }

    /// The connection, (re)opened if needed and allowed; `None` while
    /// Redis is unreachable.
    fn get(&mut self) -> Option<&mut Live> {
        if self.con.is_none() {
            if self.last_try.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return None;
            }
            self.last_try = Some(Instant::now());
            match open(&self.target, self.timeout, &self.scripts) {
                Ok(c) => {
                    tracing::info!("redis connection up");
                    self.con = Some(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis unreachable");
                    return None;
                }
            }
        }
        self.con.as_mut()
    }

    /// Runs `cmds` as one pipeline (one round trip); one result per
    /// command. `Err` when Redis cannot be reached or the connection broke
    /// (it is dropped and re-opened later). A command answered NOSCRIPT
    /// makes the node reload every script and re-run the commands that
    /// got it, once.
    pub fn pipeline(&mut self, cmds: &[Cmd]) -> Result<Vec<RedisResult<Value>>, Down> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = self.run(cmds)?;
        let again: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(&out[i], Err(e) if is_noscript(e)))
            .collect();
        if !again.is_empty() {
            tracing::warn!("redis lost its scripts (NOSCRIPT): reloading");
            self.reload()?;
            let retry: Vec<Cmd> = again.iter().map(|&i| cmds[i].clone()).collect();
            for (i, r) in again.into_iter().zip(self.run(&retry)?) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn run(&mut self, cmds: &[Cmd]) -> Result<Vec<RedisResult<Value>>, Down> {
        let live = self.get().ok_or(Down)?;
        let result = match live {
            Live::Single(con) => {
                let mut p = redis::pipe();
                p.ignore_errors();
                for c in cmds {
                    p.add_command(c.clone());
                }
                p.query::<Vec<RedisResult<Value>>>(con)
            }
            Live::Cluster(con) => cluster_pipeline(con, cmds),
        };
        match result {
            Ok(v) if v.len() == cmds.len() => Ok(v),
            Ok(_) => {
                self.con = None;
                Err(Down)
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis call failed");
                self.con = None;
                self.last_try = Some(Instant::now());
                Err(Down)
            }
        }
    }

    fn reload(&mut self) -> Result<(), Down> {
        let cmds: Vec<Cmd> = self
            .scripts
            .sources()
            .iter()
            .map(|src| {
                let mut c = redis::cmd("SCRIPT");
                c.arg("LOAD").arg(*src);
                c
            })
            .collect();
        self.run(&cmds).map(|_| ())
    }
}

/// Redis could not be reached (or the connection broke): answer
/// UNAVAILABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down;

/// A pipeline over a cluster (each command routed to its slot). The
/// cluster pipeline fails as a whole on any error reply; then the commands
/// run one at a time, so each gets its own result.
fn cluster_pipeline(
    con: &mut redis::cluster::ClusterConnection,
    cmds: &[Cmd],
) -> RedisResult<Vec<RedisResult<Value>>> {
    let mut p = redis::cluster::cluster_pipe();
    for c in cmds {
        p.add_command(c.clone());
    }
    match p.query::<Vec<Value>>(con) {
        Ok(v) => Ok(v
            .into_iter()
            .map(|x| match x {
                Value::ServerError(e) => Err(e.into()),
                x => Ok(x),
            })
            .collect()),
        Err(e) if is_down(&e) => Err(e),
        Err(_) => {
            let mut out = Vec::with_capacity(cmds.len());
            for c in cmds {
                match c.query::<Value>(con) {
                    Err(e) if is_down(&e) => return Err(e),
                    r => out.push(r),
                }
            }
            Ok(out)
        }
    }
}

/// An error that means "no answer" (connection, timeout, cluster down),
/// not a server's error reply to one command.
fn is_down(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
