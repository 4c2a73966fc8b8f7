//! The `loadgen` binary: `idle`, `storm` and `c1m` for people, `worker`
//! for the parent's child processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use loadgen::chat::Mode;
use loadgen::report::Report;
use loadgen::run::{ChatSpec, RunSpec, run};
use loadgen::wire::WorkerSpec;
use loadgen::worker::Worker;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Millgate load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N sessions, hold them with heartbeats, report.
    Idle(Common),
    /// Hold N sessions, drain one gateway (SIGTERM), measure the reconnects.
    Storm {
        #[command(flatten)]
        common: Common,
        /// The gateway to drain.
        #[arg(long)]
        drain_pid: u32,
        /// Give up waiting for everyone to be back after this long.
        #[arg(long, default_value_t = 120)]
        storm_timeout_s: u64,
    },
    /// Open N sessions, hold them, then chat: pairs or rooms at a rate.
    Chat {
        #[command(flatten)]
        common: Common,
        /// Rooms to spread sessions over; 0 = pairs sending direct messages.
        #[arg(long, default_value_t = 0)]
        rooms: u64,
        /// Messages per second over all sessions.
        #[arg(long, default_value_t = 1000.0)]
        chat_rate: f64,
        /// Body size in bytes (at least 8: the send time).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        chat_s: u64,
        /// Pipelined instead of paced: each sender keeps this many SENDs
        /// unacknowledged, sending the next as each SEND_ACK arrives, as
        /// fast as acks allow (`--chat-rate` is then ignored).
        #[arg(long, default_value_t = 0)]
        window: u32,
        /// Only the first N sessions send (the rest only receive); 0 = all.
        /// `--sessions 2 --senders 1` is one sender to one receiver.
        #[arg(long, default_value_t = 0)]
        senders: u64,
    },
    /// Build nothing, start everything: logic, gateways and load, then report.
    C1m(loadgen::c1m::C1mArgs),
    /// Internal: one worker process, spec and commands on stdin.
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Network {
    Unknown,
    Wired,
    Wifi,
    Cell5g,
    Cell4g,
    Cell3g,
    Cell2g,
}

#[derive(Args, Debug)]
struct Common {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Sessions to open.
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// The token secret file (one trailing newline is removed).
    #[arg(long)]
    secret_file: PathBuf,
    /// Connects per second over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Most sessions connecting or logging in at once, per worker.
    #[arg(long, default_value_t = 1000)]
    max_inflight: u32,
    /// Heartbeat at this interval whatever the server says.
    #[arg(long)]
    heartbeat_ms: Option<u32>,
    /// `network` sent in LOGIN (it picks the server's starting interval).
    #[arg(long, value_enum, default_value = "wired")]
    network: Network,
    /// How long to hold the sessions once all are up.
    #[arg(long, default_value_t = 10)]
    hold_s: u64,
    /// Part of the hold before the CPU-per-heartbeat window opens.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Give up on the ramp after this long.
    #[arg(long, default_value_t = 120)]
    ramp_timeout_s: u64,
    /// A gateway process to measure (RSS and CPU); repeatable.
    #[arg(long = "gateway-pid")]
    gateway_pids: Vec<u32>,
    /// At least this many worker processes.
    #[arg(long, default_value_t = 1)]
    workers: u64,
    /// Sessions per worker (default: from the open-file limit).
    #[arg(long)]
    per_worker: Option<u64>,
    /// Sessions per source address (default 40,000; each gets its own port).
    #[arg(long)]
    per_source: Option<u64>,
    /// uin of the first session.
    #[arg(long, default_value_t = 1_000_000)]
    uin_base: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw sessions and memory over the run into this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn network(n: Network) -> proto::pb::NetworkType {
    use proto::pb::NetworkType as N;
    match n {
        Network::Unknown => N::NetworkUnknown,
        Network::Wired => N::Wired,
        Network::Wifi => N::Wifi,
        Network::Cell5g => N::Cell5g,
        Network::Cell4g => N::Cell4g,
        Network::Cell3g => N::Cell3g,
        Network::Cell2g => N::Cell2g,
    }
}

fn spec(
    c: &Common,
    storm_pid: Option<u32>,
    storm_timeout: Duration,
    chat: Option<ChatSpec>,
) -> anyhow::Result<RunSpec> {
    Ok(RunSpec {
        addr: c.addr,
        sessions: c.sessions,
        rate: c.rate,
        max_inflight: c.max_inflight,
        forced_heartbeat_ms: c.heartbeat_ms,
        network: network(c.network) as i32,
        hold: Duration::from_secs(c.hold_s),
        warmup: Duration::from_secs(c.warmup_s),
        ramp_timeout: Duration::from_secs(c.ramp_timeout_s),
        secret: loadgen::read_secret(&c.secret_file)?,
        uin_base: c.uin_base,
        min_workers: c.workers,
        per_worker: c.per_worker,
        per_source: c.per_source,
        gateway_pids: c.gateway_pids.clone(),
        storm_pid,
        storm_timeout,
        chat,
        progress_bar: !c.quiet,
        exe: std::env::current_exe().context("locating the loadgen executable")?,
    })
}

fn finish(report: &Report, json: Option<&PathBuf>, png: Option<&PathBuf>) -> anyhow::Result<()> {
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = png {
        loadgen::chart::draw(&report.series, path)
            .with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(())
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    Ok(stop)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Worker => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the worker spec")?;
            let spec: WorkerSpec =
                serde_json::from_str(&line).context("parsing the worker spec")?;
            // SIGINT from a terminal reaches the whole group: the parent decides.
            signal_hook::flag::register(
                signal_hook::consts::SIGINT,
                Arc::new(AtomicBool::new(false)),
            )?;
            Worker::new(spec)?.run()
        }
        Cmd::Idle(c) => {
            let stop = stop_flag()?;
            let report = run(&spec(&c, None, Duration::ZERO, None)?, &stop)?;
            finish(&report, c.json.as_ref(), c.png.as_ref())
        }
        Cmd::Storm {
            common,
            drain_pid,
            storm_timeout_s,
        } => {
            let stop = stop_flag()?;
            let s = spec(
                &common,
                Some(drain_pid),
                Duration::from_secs(storm_timeout_s),
                None,
            )?;
            let report = run(&s, &stop)?;
            finish(&report, common.json.as_ref(), common.png.as_ref())
        }
        Cmd::Chat {
            common,
            rooms,
            chat_rate,
            payload,
            chat_s,
            window,
            senders,
        } => {
            let stop = stop_flag()?;
            let chat = ChatSpec {
                mode: if rooms == 0 {
                    Mode::Pairs
                } else {
                    Mode::Rooms { rooms }
                },
                rate: chat_rate,
                payload,
                duration: Duration::from_secs(chat_s),
                window,
                senders,
            };
            let report = run(&spec(&common, None, Duration::ZERO, Some(chat))?, &stop)?;
            finish(&report, common.json.as_ref(), common.png.as_ref())
        }
        Cmd::C1m(args) => {
            let stop = stop_flag()?;
            let code = loadgen::c1m::main(&args, &stop)?;
            std::process::exit(code);
        }
    }
}
