//! The gateway process: binds one SO_REUSEPORT listener per worker, starts
//! the workers, the metrics endpoint and the signal thread, and owns the
//! lifecycle.
//!
//! Lifecycle (see the README's "Operating" section): SIGTERM drains —
//! every worker stops accepting, sends each session GOAWAY with a
//! reconnect delay spread over `drain_ms`, closes them paced over that
//! window, and the process exits 0 once all are closed (or the window plus
//! a grace period has passed). SIGINT stops at once: the workers return
//! and the kernel closes every socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;

use mio::Waker;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::metrics::{self, WorkerStats};
use crate::ratelimit;
use crate::session::SessionConfig;
use crate::uplink::{Identity, Uplink, UplinkConfig};
use crate::worker::{self, Worker, WorkerConfig};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("starting worker {index}: {source}")]
    Worker { index: usize, source: io::Error },
    #[error("signal handling: {0}")]
    Signals(io::Error),
    #[error("reading the OS random source for the gateway's identity: {0}")]
    Random(getrandom::Error),
}

/// A running gateway.
#[derive(Debug)]
pub struct Server {
    /// The address the workers listen on (the real port when 0 was asked).
    pub local_addr: SocketAddr,
    /// The metrics address, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    workers: Vec<JoinHandle<io::Result<()>>>,
    wakers: Vec<Arc<Waker>>,
    control: Arc<AtomicU8>,
}

/// A listening socket with SO_REUSEPORT and the client socket options that
/// accepted sockets inherit from it on Linux (buffers, TCP_NODELAY).
fn bind_listener(addr: SocketAddr, cfg: &Config) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(cfg.nodelay)?;
    if let Some(n) = cfg.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if cfg.send_buffer > 0 {
        socket.set_send_buffer_size(cfg.send_buffer)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(cfg.backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

impl Server {
    /// Binds and starts everything; returns once the workers are running.
    pub fn start(cfg: &Config) -> Result<Server, StartError> {
        let secret = cfg.read_secret()?;
        let key = proto::TokenKey::new(&secret);
        let threads = cfg.worker_threads();
        let control = Arc::new(AtomicU8::new(worker::RUN));
        let identity = Identity::random().map_err(StartError::Random)?;
        // High bits of session ids: 16 bits of this process's instance.
        let nonce = identity.instance & 0xffff;

        let mut addr = cfg.listen;
        let mut listeners = Vec::with_capacity(threads);
        for _ in 0..threads {
            let l = bind_listener(addr, cfg).map_err(|source| StartError::Bind { addr, source })?;
            // With port 0, the others join the port the first one got.
            addr = l
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            listeners.push(l);
        }

        let stats: Vec<Arc<WorkerStats>> = (0..threads).map(|_| Arc::default()).collect();
        let mut workers = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        let mut built = Vec::with_capacity(threads);
        // One clock base and one rate-limit table for every worker: a
        // reconnect onto another worker finds its buckets (rule 10).
        let epoch = std::time::Instant::now();
        let buckets = Arc::new(ratelimit::Shared::new(cfg.rate_table_capacity));
        for (index, listener) in listeners.into_iter().enumerate() {
            let wcfg = WorkerConfig {
                index,
                workers: threads,
                session: SessionConfig {
                    heartbeat: cfg.heartbeat.clone(),
                    rate: cfg.limits(),
                    login_timeout_ms: cfg.login_timeout_ms,
                    linger_ms: cfg.linger_ms,
                    key: key.clone(),
                    session_id_prefix: (nonce << 48) | ((index as u64 & 0xffff) << 32),
                },
                max_body: cfg.max_body,
                tick_ms: u64::from(cfg.tick_ms),
                wheel_slots: cfg.wheel_slots,
                max_connections: cfg.max_connections_per_thread,
                drain_ms: cfg.drain_ms,
                write_budget: cfg.write_budget,
                epoch,
                emfile_grace_ms: cfg.emfile_grace_ms,
            };
            let (w, waker) = Worker::new(
                wcfg,
                listener,
                stats[index].clone(),
                control.clone(),
                buckets.clone(),
            )
            .map_err(|source| StartError::Worker { index, source })?;
            built.push(w);
            wakers.push(waker);
        }

        let started = std::time::Instant::now();
        let mut uplink_stats = None;
        let mut gate = None;
        if !cfg.logic.is_empty() {
            let (uplink, ports) = Uplink::new(
                cfg.logic.clone(),
                identity,
                &wakers,
                UplinkConfig::from_config(cfg),
            )
            .map_err(|source| StartError::Worker {
                index: threads,
                source,
            })?;
            uplink_stats = Some(uplink.stats());
            gate = Some(uplink.readiness());
            for (w, port) in built.iter_mut().zip(ports) {
                w.set_port(port);
            }
            std::thread::Builder::new()
                .name("uplink".into())
                .spawn(move || uplink.run())
                .map_err(|source| StartError::Worker {
                    index: threads,
                    source,
                })?;
        }

        // Readiness: with a logic server, the workers start their loops
        // (and so accept) once the link is up or the grace has passed; the
        // listeners are bound already, so early clients wait in the backlog.
        let grace_end = started + std::time::Duration::from_millis(cfg.link_grace_ms);
        for (index, w) in built.into_iter().enumerate() {
            let gate = gate.clone();
            let handle = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    if let Some(gate) = gate
                        && !gate.wait(grace_end)
                    {
                        tracing::warn!(
                            worker = index,
                            "link not up within the grace; accepting clients anyway (rule 13)"
                        );
                    }
                    w.run()
                })
                .map_err(|source| StartError::Worker { index, source })?;
            workers.push(handle);
        }

        let metrics_addr = match cfg.metrics {
            Some(m) => {
                let listener =
                    metrics::bind(m).map_err(|source| StartError::Bind { addr: m, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr: m, source })?;
                let stats = stats.clone();
                let up = uplink_stats.clone();
                metrics::serve(listener, move || {
                    let connected = up
                        .as_ref()
                        .is_some_and(|u| u.connected.load(Ordering::Acquire));
                    let mut text = metrics::render(&stats, connected);
                    if let Some(u) = &up {
                        text.push_str(&u.render());
                    }
                    text
                });
                Some(bound)
            }
            None => None,
        };

        Ok(Server {
            local_addr: addr,
            metrics_addr,
            workers,
            wakers,
            control,
        })
    }

    /// Asks every worker to drain (as SIGTERM does).
    pub fn drain(&self) {
        self.signal(worker::DRAIN);
    }

    /// Asks every worker to stop at once (as SIGINT does).
    pub fn stop(&self) {
        self.signal(worker::STOP);
    }

    fn signal(&self, what: u8) {
        self.control.fetch_max(what, Ordering::AcqRel);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Handles SIGTERM (drain) and SIGINT (stop) on a thread of its own.
    pub fn handle_signals(&self) -> Result<(), StartError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(StartError::Signals)?;
        let control = self.control.clone();
        let wakers = self.wakers.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let what = if sig == SIGTERM {
                        worker::DRAIN
                    } else {
                        worker::STOP
                    };
                    tracing::info!(
                        signal = sig,
                        "{}",
                        if what == worker::DRAIN {
                            "draining"
                        } else {
                            "stopping"
                        }
                    );
                    control.fetch_max(what, Ordering::AcqRel);
                    for w in &wakers {
                        let _ = w.wake();
                    }
                }
            })
            .map_err(StartError::Signals)?;
        Ok(())
    }

    /// Waits for every worker to finish.
    pub fn join(self) -> io::Result<()> {
        for w in self.workers {
            match w.join() {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::other("a worker panicked")),
            }
        }
        Ok(())
    }
}
