//! Wiring: binds the sockets, starts the shard threads, the network thread
//! and the metrics endpoint, and hands back a [`Server`] to stop and join.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::unbounded;
use mio::{Poll, Waker};

use crate::config::Config;
use crate::durable::{Durability, ReadBarrier, Threads};
use crate::metrics::{self, Stats};
use crate::net::{Net, NetConfig, WAKER};
use crate::shard::{Shard, ShardConfig};
use crate::store::{FjallStore, MemStore, OpenError, Store};
use crate::worker::{self, IoSender};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error(transparent)]
    Redis(#[from] crate::redis_node::RedisStartError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Gateways connecting at once after a restart (a few per gateway process).
const LISTEN_BACKLOG: i32 = 1024;

/// The link listener, non-blocking for mio, and its bound address:
/// `SO_REUSEADDR` (as `std::net::TcpListener::bind` sets it), and
/// `SO_REUSEPORT` when asked (see `Config::reuse_port`).
fn bind_link_listener(
    addr: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<(mio::net::TcpListener, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    let std: std::net::TcpListener = socket.into();
    std.set_nonblocking(true)?;
    let local = std.local_addr()?;
    Ok((mio::net::TcpListener::from_std(std), local))
}

/// Serves `/metrics` on `addr` when configured; the bound address.
fn serve_metrics(
    addr: Option<SocketAddr>,
    stats: &Arc<Stats>,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let l = std::net::TcpListener::bind(addr)?;
    let bound = l.local_addr()?;
    metrics::serve(l, stats.clone())?;
    Ok(Some(bound))
}

/// A running logic server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stopper: Stopper,
    net: JoinHandle<std::io::Result<()>>,
    shards: Vec<JoinHandle<()>>,
    /// The embedded store's writer and group commit (absent on a Redis
    /// node).
    durability: Option<(Arc<Durability>, Threads)>,
    /// A Redis node's bus thread and its stop flag.
    bus: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Stops a running server from any thread (e.g. a signal handler thread).
#[derive(Debug, Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// Asks the network thread to stop; it then stops the shards.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

impl Server {
    /// Opens the store, binds and starts everything.
    pub fn start(cfg: &Config) -> Result<Server, StartError> {
        if let Some(url) = cfg.redis.clone() {
            return Server::start_redis(cfg, &url);
        }
        let store: Arc<dyn Store> = if cfg.in_memory() {
            tracing::warn!("--data-dir :memory: keeps all state in memory: NOT durable");
            Arc::new(MemStore::new(cfg.retention()))
        } else {
            let opened = std::time::Instant::now();
            let s = FjallStore::open(&cfg.data_dir, cfg.retention())?;
            tracing::info!(
                dir = %cfg.data_dir.display(),
                ms = opened.elapsed().as_millis() as u64,
                repaired = s.repaired.len(),
                "store open"
            );
            Arc::new(s)
        };
        let n = cfg.shard_count();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (listener, local_addr) = bind_link_listener(cfg.listen, cfg.reuse_port)?;

        let stats = Arc::new(Stats::new(n));
        let metrics_addr = serve_metrics(cfg.metrics, &stats)?;

        let (io_tx, io_rx) = unbounded();
        let io = IoSender {
            tx: io_tx,
            waker: waker.clone(),
        };
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
        let shard_cfg = ShardConfig {
            shards: n,
            retention: cfg.retention(),
            max_send_body: cfg.max_send_body,
            max_client_body: cfg.max_client_body,
            max_rooms_per_user: cfg.max_rooms_per_user,
            idle_ms: cfg.evict_idle_secs.saturating_mul(1_000),
        };
        let durability = Durability::new(cfg.fsync, store.clone(), n);
        let fsync = durability.spawn(
            std::time::Duration::from_millis(cfg.fsync_interval_ms),
            txs.clone(),
        )?;
        let mut shards = Vec::with_capacity(n);
        for (me, rx) in rxs.into_iter().enumerate() {
            let h = worker::spawn(
                me,
                Shard::new(
                    me,
                    shard_cfg,
                    Arc::new(ReadBarrier {
                        durability: durability.clone(),
                        shard: me,
                    }),
                ),
                rx,
                txs.clone(),
                io.clone(),
                stats.shards[me].clone(),
                durability.clone(),
            )?;
            shards.push(h);
        }

        let flag = Arc::new(AtomicBool::new(false));
        let net_cfg = NetConfig {
            max_link_frame: cfg.max_link_frame,
            max_backlog: cfg.max_gateway_backlog,
            nodelay: cfg.nodelay,
        };
        let net = Net::new(poll, listener, net_cfg, txs, io_rx, flag.clone(), stats)?;
        let net = std::thread::Builder::new()
            .name("net".into())
            .spawn(move || net.run())?;
        Ok(Server {
            local_addr,
            metrics_addr,
            stopper: Stopper { flag, waker },
            net,
            shards,
            durability: Some((durability, fsync)),
            bus: None,
        })
    }

    /// A node whose state lives in Redis (`crate::redis_node`): the same
    /// network thread, Redis workers instead of shards.
    fn start_redis(cfg: &Config, url: &str) -> Result<Server, StartError> {
        let n = cfg.shard_count();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (io_tx, io_rx) = unbounded();
        let io = IoSender {
            tx: io_tx,
            waker: waker.clone(),
        };
        // Redis first: a bad URL or an unreachable Redis refuses to start
        // before the port is taken.
        let started = crate::redis_node::start(cfg, url, n, io)?;
        let (listener, local_addr) = bind_link_listener(cfg.listen, cfg.reuse_port)?;
        let stats = Arc::new(Stats::new(n));
        let metrics_addr = serve_metrics(cfg.metrics, &stats)?;
        let flag = Arc::new(AtomicBool::new(false));
        let net_cfg = NetConfig {
            max_link_frame: cfg.max_link_frame,
            max_backlog: cfg.max_gateway_backlog,
            nodelay: cfg.nodelay,
        };
        let net = Net::new(
            poll,
            listener,
            net_cfg,
            started.txs,
            io_rx,
            flag.clone(),
            stats,
        )?;
        let net = std::thread::Builder::new()
            .name("net".into())
            .spawn(move || net.run())?;
        Ok(Server {
            local_addr,
            metrics_addr,
            stopper: Stopper { flag, waker },
            net,
            shards: started.workers,
            durability: None,
            bus: Some((started.bus_stop, started.bus)),
        })
    }

    /// The bound link address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound metrics address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A handle that stops this server.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Waits for the network thread and the shards to finish.
    pub fn join(self) -> std::io::Result<()> {
        let net = self
            .net
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("net thread panicked")));
        for h in self.shards {
            if h.join().is_err() {
                return Err(std::io::Error::other("shard thread panicked"));
            }
        }
        // A last sync, so a clean stop loses nothing even in batch mode.
        if let Some((durability, threads)) = self.durability
            && durability.shutdown(threads).is_err()
        {
            return Err(std::io::Error::other("writer or fsync thread panicked"));
        }
        if let Some((stop, bus)) = self.bus {
            stop.store(true, Ordering::Release);
            if bus.join().is_err() {
                return Err(std::io::Error::other("bus thread panicked"));
            }
        }
        net
    }
}
