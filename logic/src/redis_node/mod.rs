//! A logic node whose state lives in Redis (`logic --redis URL`, issue 14):
//! any number of nodes share one Redis and every PROTOCOL.md rule holds
//! across them. The design (key layout, scripts, how rules 3, 6, 7, 8, 9
//! and 13 are kept, what was taken from Centrifugo and OpenIM) is
//! `logic/REDIS.md`.
//!
//! # Why a node mode of its own, not another [`crate::store::Store`]
//!
//! The shards own their state in memory and use the store as a log:
//! they assign `msg_id`s from an in-memory counter, decide dedup from an
//! in-memory "latest", route from an in-memory router, and write blind
//! batches. With several nodes none of those decisions may be taken in
//! one process's memory: the counter must be incremented, the dedup
//! record compared and the login times compared *in Redis*, atomically,
//! and the answer read back. So the decisions move into Lua scripts, and
//! this module replaces the shards (not the store) behind the same network
//! thread ([`crate::net`]), link protocol and queues: the network thread
//! routes each uin to a worker here exactly as it routes it to a shard.
//!
//! | module | owns |
//! |--------|------|
//! | `scripts` | key names (hash tags) and the Lua scripts |
//! | `conn` | a worker's connection: timeouts, reconnects, script (re)loading |
//! | `worker` | link messages -> Redis calls -> link answers |
//! | `read` | `RANGE` answers and PUSH frames from stored elements |
//! | `bus` | the local session table; the pub/sub thread (fan-out, kicks, catch-up) |

mod bus;
mod conn;
mod read;
mod scripts;
mod worker;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};

use crate::config::Config;
use crate::worker::{Input, IoSender};
use conn::Conn;
use scripts::Scripts;

/// Why a Redis node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStartError {
    #[error("--redis {url}: not a Redis URL ({source}); expected redis://HOST:PORT[/DB]")]
    BadUrl {
        url: String,
        source: redis::RedisError,
    },
    #[error("--redis {url}: Redis unreachable ({source})")]
    Unreachable {
        url: String,
        source: redis::RedisError,
    },
    #[error("--redis {url}: subscribing to the bus failed ({source})")]
    Subscribe {
        url: String,
        source: redis::RedisError,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A started Redis node's threads.
#[derive(Debug)]
pub struct Started {
    /// One queue per worker, for the network thread.
    pub txs: Vec<Sender<Input>>,
    /// The worker threads (they stop on `Input::Stop`).
    pub workers: Vec<JoinHandle<()>>,
    /// Set to stop the bus thread.
    pub bus_stop: Arc<AtomicBool>,
    pub bus: JoinHandle<()>,
    /// This node's id (random per process start).
    pub node: u64,
}

/// `url` without its password (`redis://user:secret@h` -> `redis://user:***@h`),
/// for messages and logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let Some(at) = url[scheme_end..].find('@').map(|i| i + scheme_end) else {
        return url.to_string();
    };
    let user = &url[scheme_end..at];
    let name = user.split(':').next().unwrap_or("");
    format!("{}{name}:***{}", &url[..scheme_end], &url[at..])
}

/// Connects (refusing to start on a bad URL or an unreachable Redis),
/// loads the scripts, subscribes to the bus and starts `n` workers.
pub fn start(cfg: &Config, url: &str, n: usize, io: IoSender) -> Result<Started, RedisStartError> {
    let client = redis::Client::open(url).map_err(|source| RedisStartError::BadUrl {
        url: redact(url),
        source,
    })?;
    let url = &redact(url);
    let timeout = Duration::from_millis(cfg.redis_timeout_ms.max(1));
    let scripts = Arc::new(Scripts::new());
    let unreachable = |source| RedisStartError::Unreachable {
        url: url.to_string(),
        source,
    };
    let target = conn::detect(url, client.clone(), timeout).map_err(unreachable)?;
    drop(conn::open(&target, timeout, &scripts).map_err(unreachable)?);
    tracing::info!(url, target = ?target, "redis reachable, scripts loaded");
    let node = loop {
        // 0 never names a node; a CSPRNG failure falls back to the clock.
        let x = getrandom::u64().unwrap_or_else(|_| crate::worker::now_ms());
        if x != 0 {
            break x;
        }
    };
    let local = Arc::new(bus::Local::default());
    let bus_stop = Arc::new(AtomicBool::new(false));
    let bus = bus::Bus {
        client: client.clone(),
        timeout,
        node,
        local: local.clone(),
        io: io.clone(),
        reader: Conn::new(target.clone(), timeout, scripts.clone()),
        max_age_ms: cfg.retention_secs.saturating_mul(1_000),
        stop: bus_stop.clone(),
    };
    let (ready_tx, ready) = crossbeam_channel::bounded(1);
    let bus = std::thread::Builder::new()
        .name("redis-bus".into())
        .spawn(move || bus.run(ready_tx))?;
    let subscribe_failed = |source| RedisStartError::Subscribe {
        url: url.to_string(),
        source,
    };
    match ready.recv_timeout(timeout * 4) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(subscribe_failed(e)),
        Err(_) => {
            return Err(subscribe_failed(redis::RedisError::from(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to SUBSCRIBE"),
            )));
        }
    }
    let wcfg = worker::WorkerConfig {
        node,
        max_send_body: cfg.max_send_body,
        max_client_body: cfg.max_client_body,
        max_rooms_per_user: cfg.max_rooms_per_user,
        retention_count: cfg.retention_count,
        retention_ms: cfg.retention_secs.saturating_mul(1_000),
    };
    let mut txs = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    for me in 0..n {
        let (tx, rx) = unbounded();
        let w = worker::Worker::new(
            wcfg,
            Conn::new(target.clone(), timeout, scripts.clone()),
            scripts.clone(),
            local.clone(),
            io.clone(),
        );
        workers.push(
            std::thread::Builder::new()
                .name(format!("redis-worker-{me}"))
                .spawn(move || w.run(&rx))?,
        );
        txs.push(tx);
    }
    tracing::info!(url, node, workers = n, "redis node up");
    Ok(Started {
        txs,
        workers,
        bus_stop,
        bus,
        node,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(super::redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(super::redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(super::redact("redis://h:6379"), "redis://h:6379");
    }
}
