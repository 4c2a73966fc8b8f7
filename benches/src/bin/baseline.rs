//! The baseline server's command line: flags, the secret, the tokio runtime
//! (1 thread by default, the same core budget as `gateway --threads 1`).
//! Prints `gateway listening on ADDR` first, as the gateway does, so the
//! scripts that drive one drive the other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use millgate_benches::baseline::{self, Config};
use proto::TokenKey;

/// A deliberately ordinary tokio server for PROTOCOL.md's session rules,
/// to compare the gateway with. Not for production.
#[derive(Debug, Parser)]
#[command(name = "baseline")]
struct Cli {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// File with the HMAC secret for login tokens (one trailing newline
    /// removed).
    #[arg(long)]
    secret_file: PathBuf,
    /// Heartbeat interval for every network type (default: rule 5's
    /// per-network intervals). The idle timeout is 3 x this.
    #[arg(long)]
    heartbeat_ms: Option<u32>,
    /// Time allowed from accept to LOGIN.
    #[arg(long, default_value_t = 10_000)]
    login_timeout_ms: u64,
    /// Largest accepted frame body.
    #[arg(long, default_value_t = proto::codec::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Initial capacity of each connection's read and write buffers
    /// (tokio-util's `Framed` default is 8 KiB).
    #[arg(long, default_value_t = 8 * 1024)]
    buffer_bytes: usize,
    /// Runtime threads: 1 is tokio's current-thread runtime, more is the
    /// multi-thread runtime with that many workers.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut secret = std::fs::read(&cli.secret_file)
        .with_context(|| format!("reading {}", cli.secret_file.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    anyhow::ensure!(!secret.is_empty(), "the secret file is empty");
    let cfg = Config {
        heartbeat_ms: cli.heartbeat_ms,
        login_timeout: Duration::from_millis(cli.login_timeout_ms),
        max_body: cli.max_body,
        buffer_capacity: cli.buffer_bytes,
        ..Config::new(TokenKey::new(&secret))
    };
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    runtime.block_on(async {
        let listener =
            baseline::listen(cli.listen).with_context(|| format!("binding {}", cli.listen))?;
        println!("gateway listening on {}", listener.local_addr()?);
        // Spawned, so that a multi-thread runtime runs the accept loop on a
        // worker rather than on this thread.
        tokio::spawn(baseline::serve(listener, cfg))
            .await
            .context("the accept loop panicked")
    })
}
