//! The `logic` binary: loads the configuration, starts the server, prints
//! the bound addresses (`listening ADDR`, `metrics ADDR`) on stdout, and
//! exits cleanly on SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use logic::config::{Cli, Config};
use logic::server::Server;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::Write;

/// jemalloc, not glibc's malloc: after a burst (a million users logging
/// in and out), glibc kept 270-410 MB of freed memory in its arenas for
/// good; jemalloc's background thread gives freed pages back after its
/// decay time (1 s, set in `.cargo/config.toml`). Measured in the README
/// ("Memory").
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cfg = Config::load(&cli).context("configuration")?;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let server = Server::start(&cfg).with_context(|| format!("starting on {}", cfg.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", server.local_addr())?;
        if let Some(m) = server.metrics_addr() {
            writeln!(out, "metrics {m}")?;
        }
        out.flush()?;
    }
    tracing::info!(addr = %server.local_addr(), shards = cfg.shard_count(), "logic server up");
    let stopper = server.stopper();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(sig, "signal received, stopping");
                stopper.stop();
            }
        })
        .context("spawning the signal thread")?;
    server.join().context("server")?;
    tracing::info!("logic server stopped");
    Ok(())
}
