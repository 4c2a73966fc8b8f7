//! One worker's connection to Redis: opened with a connect timeout, every
//! call bounded by a read/write timeout, scripts loaded on each new
//! connection, and re-opened lazily (at most every [`RECONNECT_EVERY`])
//! after a failure, so a Redis that is gone costs a request at most one
//! timeout and never a hang (PROTOCOL.md rule 13).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Cmd, RedisError, RedisResult, Value};

use super::scripts::Scripts;

/// Least time between two connection attempts after a failure: requests
/// in between are answered UNAVAILABLE at once.
pub const RECONNECT_EVERY: Duration = Duration::from_millis(100);

/// A connection that may be down.
pub struct Conn {
    client: redis::Client,
    timeout: Duration,
    scripts: Arc<Scripts>,
    con: Option<redis::Connection>,
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
/// loads every script on it.
pub fn open(
    client: &redis::Client,
    timeout: Duration,
    scripts: &Scripts,
) -> RedisResult<redis::Connection> {
    let mut con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    for src in scripts.sources() {
        let _: String = redis::cmd("SCRIPT").arg("LOAD").arg(src).query(&mut con)?;
    }
    Ok(con)
}

impl Conn {
    /// A connection to `client`'s Redis, opened when first used.
    pub fn new(client: redis::Client, timeout: Duration, scripts: Arc<Scripts>) -> Conn {
        Conn {
            client,
            timeout,
            scripts,
            con: None,
            last_try: None,
        }
    }

    /// The connection, (re)opened if needed and allowed; `None` while
    /// Redis is unreachable.
    fn get(&mut self) -> Option<&mut redis::Connection> {
        if self.con.is_none() {
            if self.last_try.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return None;
            }
            self.last_try = Some(Instant::now());
            match open(&self.client, self.timeout, &self.scripts) {
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
        let con = self.get().ok_or(Down)?;
        let mut p = redis::pipe();
        p.ignore_errors();
        for c in cmds {
            p.add_command(c.clone());
        }
        match p.query::<Vec<RedisResult<Value>>>(con) {
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

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
