//! `loadgen c1m`: the one-command run. Preflight (limits, kernel knobs,
//! memory; raise what root may, refuse clearly what cannot fit), start the
//! gateways on one port (SO_REUSEPORT) and the logic server if built, run
//! the idle load with every gateway measured, report, and stop everything
//! it started, by PID, on success, failure or Ctrl-C.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::chat::Mode;
use crate::procfs;
use crate::run::{ChatSpec, RunSpec, run};
use crate::shard;

/// Kernel memory budgeted per loopback socket for the preflight (the
/// gateway's doctor measured 4,225 B of slab per idle socket; rounded up).
pub const KERNEL_BYTES_PER_SOCKET: u64 = 5_000;
/// User-space bytes budgeted per session: gateway plus load generator.
pub const USER_BYTES_PER_SESSION: u64 = 1_000;
/// Files a gateway keeps besides its sessions (gateway `doctor::FD_RESERVE`).
pub const GATEWAY_FD_RESERVE: u64 = 1_024;
/// SO_REUSEPORT spreads by hash, not evenly: fill gateways to this share
/// of their limit on average so the fullest one still fits.
pub const GATEWAY_FILL: f64 = 0.8;
/// How long a gateway gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a gateway gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct C1mArgs {
    /// Sessions to hold.
    #[arg(long, default_value_t = 100_000)]
    pub sessions: u64,
    /// Seconds to hold them.
    #[arg(long, default_value_t = 300)]
    pub hold_s: u64,
    /// Heartbeat interval the gateways give every session.
    #[arg(long, default_value_t = 30_000)]
    pub heartbeat_ms: u32,
    /// Let the gateways adapt the heartbeat interval (PROTOCOL.md rule 5);
    /// by default every session heartbeats at exactly `--heartbeat-ms`.
    #[arg(long)]
    pub adaptive_heartbeat: bool,
    /// Port every gateway listens on, on 127.0.0.1.
    #[arg(long, default_value_t = 7000)]
    pub port: u16,
    /// Gateway processes (default: as many as the open-file limit needs).
    #[arg(long)]
    pub gateways: Option<u64>,
    /// Threads per gateway.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Connects per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Sessions each load worker has connecting or logging in at once.
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: u32,
    /// Where the gateway and logic binaries are (default: beside this
    /// loadgen binary, i.e. target/release).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where logs, the secret, the JSON report and the chart go.
    #[arg(long, default_value = "target/c1m")]
    pub out_dir: PathBuf,
    /// Seconds of chat after the hold (pairs of sessions sending direct
    /// messages through the logic server); 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub chat_s: u64,
    /// Chat messages per second over all sessions.
    #[arg(long, default_value_t = 10_000.0)]
    pub chat_rate: f64,
    /// Chat message body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub chat_payload: usize,
    /// Run even if the preflight says it will not fit.
    #[arg(long)]
    pub force: bool,
}

/// Child processes that are killed by PID when dropped.
#[derive(Debug, Default)]
struct Procs {
    children: Vec<(String, Child)>,
}

impl Procs {
    /// PIDs of the processes whose name starts with `kind`.
    fn pids(&self, kind: &str) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(name, _)| name.starts_with(kind))
            .map(|(_, c)| c.id())
            .collect()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, c) in &mut self.children {
            if let Some(status) = c.try_wait()? {
                bail!("{name} (pid {}) exited: {status}", c.id());
            }
        }
        Ok(())
    }

    /// SIGTERM all, wait for the grace period, SIGKILL the rest.
    fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for (_, c) in &self.children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let end = Instant::now() + STOP_GRACE;
        for (name, c) in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        eprintln!(
                            "c1m: {name} (pid {}) still running after SIGTERM: killing",
                            c.id()
                        );
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the preflight found: things it did, and reasons to refuse.
#[derive(Debug, Default)]
pub struct Preflight {
    pub did: Vec<String>,
    pub warnings: Vec<String>,
    pub refusals: Vec<String>,
}

fn is_root() -> bool {
    // Effective uid: the second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("Uid:")?
                    .split_whitespace()
                    .nth(1)
                    .map(|u| u == "0")
            })
        })
        .unwrap_or(false)
}

fn raise(pf: &mut Preflight, name: &str, want: u64, value: &str) {
    let cur = procfs::sysctl(name)
        .ok()
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    if cur.is_some_and(|c| c >= want) {
        return;
    }
    if !is_root() {
        pf.warnings.push(format!(
            "{name} is {cur:?}, below {want}, and only root may raise it: see tuning/"
        ));
        return;
    }
    match procfs::set_sysctl(name, value) {
        Ok(()) => pf.did.push(format!("set {name} = {value} (was {cur:?})")),
        Err(e) => pf.warnings.push(format!("could not raise {name}: {e}")),
    }
}

/// Checks (and as root raises) what N sessions need; raises nothing when
/// the memory cannot hold them. `gateways` and
/// `workers` are the processes that will hold them.
pub fn preflight(n: u64, gateways: u64, workers: u64) -> Preflight {
    let mut pf = Preflight::default();
    // Memory first: when it cannot fit, change nothing.
    let need = 2 * n * KERNEL_BYTES_PER_SOCKET + n * USER_BYTES_PER_SESSION;
    match procfs::mem_available_kib() {
        Ok(avail) if need / 1024 > avail * 9 / 10 => pf.refusals.push(format!(
            "memory too low for N={n}: needs about {} MiB (2N sockets x {KERNEL_BYTES_PER_SOCKET} B kernel + N x {USER_BYTES_PER_SESSION} B user), {} MiB available",
            need >> 20,
            avail >> 10
        )),
        Ok(_) => {}
        Err(e) => pf.warnings.push(format!("could not read available memory: {e}")),
    }
    if !pf.refusals.is_empty() {
        return pf;
    }
    // Each session is two sockets on loopback (client and gateway end).
    let files_needed = 2 * n + (gateways + workers) * 1_100 + 10_000;
    raise(
        &mut pf,
        "fs.file-max",
        files_needed,
        &files_needed.to_string(),
    );
    match procfs::sysctl("fs.file-max").ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(m) if m < files_needed => pf.refusals.push(format!(
            "fs.file-max {m} too low for N={n}: needs {files_needed} (2 per session plus processes): see tuning/"
        )),
        _ => {}
    }
    raise(&mut pf, "net.core.somaxconn", 65_535, "65535");
    raise(&mut pf, "net.ipv4.tcp_max_syn_backlog", 65_535, "65535");
    // Ports below 10000 stay for services; the rest is for sources.
    if let Ok((lo, hi)) = procfs::port_range()
        && (lo > 10_000 || hi < 65_535)
    {
        if is_root() {
            match procfs::set_sysctl("net.ipv4.ip_local_port_range", "10000 65535") {
                Ok(()) => pf.did.push(format!(
                    "set net.ipv4.ip_local_port_range = 10000 65535 (was {lo} {hi})"
                )),
                Err(e) => pf
                    .warnings
                    .push(format!("could not widen the port range: {e}")),
            }
        } else {
            pf.warnings.push(format!(
                "port range {lo}-{hi} (not root, left as is): {} source addresses needed",
                shard::sources_needed(n, shard::per_source(lo, hi))
            ));
        }
    }
    pf
}

/// Gateways needed for `n` sessions under a per-process limit `nofile`.
pub fn gateways_for(n: u64, nofile: u64) -> u64 {
    let per = nofile.saturating_sub(GATEWAY_FD_RESERVE).max(1) as f64 * GATEWAY_FILL;
    ((n as f64 / per).ceil() as u64).max(1)
}

/// LISTEN sockets on local `port` in /proc/net/tcp.
fn listeners_on(port: u16) -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1).is_some_and(|a| a.ends_with(&want)) && f.get(3) == Some(&"0A")
        })
        .count()
}

fn random_secret() -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b).into_bytes())
}

/// Starts the logic server on `addr` (durable, its data directory
/// `logic-data` in the run's output directory) and waits for its
/// `listening` line.
fn start_logic(a: &C1mArgs, exe: &Path, addr: SocketAddr, procs: &mut Procs) -> anyhow::Result<()> {
    let log = std::fs::File::create(a.out_dir.join("logic.log"))?;
    let data = a.out_dir.join("logic-data");
    let mut child = Command::new(exe)
        .args(["--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: a terminal's Ctrl-C reaches only us, and
        // we stop it in order.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let out = child.stdout.take();
    procs.children.push(("logic".into(), child));
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = out {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
    }
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) if line.starts_with("listening") => Ok(()),
        Ok(line) => bail!("logic server said {line:?} instead of listening"),
        Err(_) => bail!("logic server did not start listening within {START_TIMEOUT:?}"),
    }
}

fn start_gateways(
    a: &C1mArgs,
    bin_dir: &Path,
    g: u64,
    secret: &Path,
    logic: Option<SocketAddr>,
    procs: &mut Procs,
) -> anyhow::Result<()> {
    let exe = bin_dir.join("gateway");
    if !exe.exists() {
        bail!("{} not found: build it first (./c1m does)", exe.display());
    }
    let before = listeners_on(a.port);
    if before > 0 {
        bail!(
            "port {} already has {before} listener(s): stop them first",
            a.port
        );
    }
    for i in 0..g {
        let log = std::fs::File::create(a.out_dir.join(format!("gateway-{i}.log")))?;
        let child = Command::new(&exe)
            .args(["--listen", &format!("127.0.0.1:{}", a.port)])
            .args(["--threads", &a.threads.to_string()])
            .arg("--secret-file")
            .arg(secret)
            .args(["--heartbeat-ms", &a.heartbeat_ms.to_string()])
            .args(["--adaptive-heartbeat", &a.adaptive_heartbeat.to_string()])
            .args(["--drain-ms", "2000"])
            .args(
                logic
                    .iter()
                    .flat_map(|l| ["--logic".to_string(), l.to_string()]),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        procs.children.push((format!("gateway {i}"), child));
    }
    let want = g as usize * a.threads.max(1) as usize;
    let end = Instant::now() + START_TIMEOUT;
    loop {
        procs.check_alive()?;
        let n = listeners_on(a.port);
        if n >= want && TcpStream::connect(("127.0.0.1", a.port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!(
                "only {n} of {want} gateway listeners on port {} after {START_TIMEOUT:?}",
                a.port
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The whole run. Returns the process exit code: 0 when every session
/// was held to the end and none was lost.
pub fn main(a: &C1mArgs, stop: &AtomicBool) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    let nofile = procfs::raise_nofile()?;
    let g = a
        .gateways
        .unwrap_or_else(|| gateways_for(a.sessions, nofile));
    let workers = shard::split(a.sessions, shard::per_worker(nofile), 1).len() as u64;
    println!(
        "c1m: {} sessions, {g} gateway(s) on 127.0.0.1:{}, {workers} load worker(s), open-file limit {nofile}",
        a.sessions, a.port
    );
    let pf = preflight(a.sessions, g, workers);
    for d in &pf.did {
        println!("c1m: {d}");
    }
    for w in &pf.warnings {
        println!("c1m: warning: {w}");
    }
    if !pf.refusals.is_empty() {
        for r in &pf.refusals {
            eprintln!("c1m: cannot run: {r}");
        }
        if !a.force {
            return Ok(2);
        }
    }
    let secret = random_secret()?;
    let secret_path = a.out_dir.join("secret");
    std::fs::write(&secret_path, &secret)?;

    let mut procs = Procs::default();
    let mut notes = Vec::new();
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("locating the binaries beside loadgen")?,
    };
    let logic_exe = bin_dir.join("logic");
    let logic_addr: SocketAddr = ([127, 0, 0, 1], a.port.wrapping_add(1)).into();
    let chat = if a.chat_s == 0 {
        notes.push("chat phase skipped: --chat-s 0".to_string());
        None
    } else if logic_exe.exists() {
        start_logic(a, &logic_exe, logic_addr, &mut procs)?;
        Some(ChatSpec {
            mode: Mode::Pairs,
            rate: a.chat_rate,
            payload: a.chat_payload,
            duration: Duration::from_secs(a.chat_s),
            window: 0,
            senders: 0,
        })
    } else {
        notes.push(format!(
            "chat phase skipped: no logic server at {}",
            logic_exe.display()
        ));
        None
    };
    start_gateways(
        a,
        &bin_dir,
        g,
        &secret_path,
        chat.map(|_| logic_addr),
        &mut procs,
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], a.port).into();
    let ramp_timeout = Duration::from_secs(60 + a.sessions / 10_000);
    let spec = RunSpec {
        addr,
        sessions: a.sessions,
        rate: a.rate,
        max_inflight: a.max_inflight,
        forced_heartbeat_ms: None,
        network: proto::pb::NetworkType::Wired as i32,
        hold: Duration::from_secs(a.hold_s),
        warmup: Duration::from_millis(u64::from(a.heartbeat_ms) + 2_000),
        ramp_timeout,
        secret,
        uin_base: 1_000_000,
        min_workers: 1,
        per_worker: None,
        per_source: None,
        // Gateways only: the logic server's memory and CPU are its own.
        gateway_pids: procs.pids("gateway"),
        storm_pid: None,
        storm_timeout: Duration::ZERO,
        chat,
        progress_bar: true,
        exe: std::env::current_exe()?,
    };
    let mut report = run(&spec, stop)?;
    procs
        .check_alive()
        .err()
        .into_iter()
        .for_each(|e| report.notes.push(format!("{e}")));
    procs.stop();
    report.notes.extend(notes);
    report.notes.extend(pf.warnings);
    print!("{}", report.table());
    let json = a.out_dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let png = a.out_dir.join("sessions.png");
    if let Err(e) = crate::chart::draw(&report.series, &png) {
        eprintln!("c1m: no chart: {e}");
    }
    println!("c1m: report in {} and {}", json.display(), png.display());
    let interrupted = stop.load(std::sync::atomic::Ordering::Relaxed);
    let ok = !interrupted
        && report.held_at_end == a.sessions
        && report.lost == 0
        && report.failed == 0
        && report.hold_s + 1.0 >= a.hold_s as f64;
    println!(
        "c1m: {}: held {} of {} sessions for {:.0} s, lost {}, failed {}",
        match (interrupted, ok) {
            (true, _) => "INTERRUPTED",
            (false, true) => "PASS",
            (false, false) => "FAIL",
        },
        report.held_at_end,
        a.sessions,
        report.hold_s,
        report.lost,
        report.failed
    );
    Ok(match (interrupted, ok) {
        (true, _) => 130,
        (false, true) => 0,
        (false, false) => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateways_are_measured_as_gateways() {
        let mut procs = Procs::default();
        for name in ["logic", "gateway 0", "gateway 1"] {
            let child = Command::new("true").spawn().unwrap();
            procs.children.push((name.to_string(), child));
        }
        let g = procs.pids("gateway");
        assert_eq!(g.len(), 2);
        assert!(!g.contains(&procs.children[0].1.id()));
        assert_eq!(procs.pids("logic"), vec![procs.children[0].1.id()]);
    }

    #[test]
    fn gateways_leave_headroom_for_uneven_reuseport_hashing() {
        assert_eq!(gateways_for(1_000_000, 20_000), 66);
        assert_eq!(gateways_for(100_000, 20_000), 7);
        assert_eq!(gateways_for(10, 20_000), 1);
    }
}
