//! One load run, as the parent sees it: split N over workers and source
//! addresses, ramp, hold with heartbeats, optionally drain a gateway
//! (storm), stop, and turn what workers and /proc said into a [`Report`].
//!
//! Gateway memory per session is Σ VmRSS of the `--gateway-pid`s after
//! every session has logged in minus before the first connect, over the
//! sessions logged in. Gateway CPU per heartbeat is Σ (utime + stime) over
//! a steady window of the hold divided by the heartbeats acked in that
//! window (worker counters snapshotted at both ends of it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::chat::{self, Mode};
use crate::fleet::Fleet;
use crate::procfs;
use crate::report::{ChatReport, Pct, Report, Sample, StormReport};
use crate::shard;
use crate::stats::Counters;
use crate::wire::{ChatPlan, ToWorker, WorkerSpec};
use crate::worker::unix_us;

/// The chat phase of a run.
#[derive(Debug, Clone, Copy)]
pub struct ChatSpec {
    pub mode: Mode,
    /// Messages per second over all sessions.
    pub rate: f64,
    pub payload: usize,
    pub duration: Duration,
    /// Pipelined: SENDs each sender keeps unacknowledged (0 = paced by `rate`).
    pub window: u32,
    /// Only the first `senders` sessions send; 0 = all.
    pub senders: u64,
}

/// Time after the last SEND for PUSHes still on their way, at least.
const CHAT_DRAIN: Duration = Duration::from_secs(2);
/// Longest wait after the last SEND for every SEND to be answered.
const CHAT_DRAIN_MAX: Duration = Duration::from_secs(30);
/// Longest wait for every JOIN_ACK in rooms mode.
const CHAT_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub addr: SocketAddr,
    pub sessions: u64,
    /// Total connects per second over all workers; 0 = as fast as possible.
    pub rate: f64,
    pub max_inflight: u32,
    pub forced_heartbeat_ms: Option<u32>,
    pub network: i32,
    pub hold: Duration,
    /// Part of the hold skipped before the CPU-per-heartbeat window opens.
    pub warmup: Duration,
    pub ramp_timeout: Duration,
    pub secret: Vec<u8>,
    pub uin_base: u64,
    pub min_workers: u64,
    /// Sessions per worker; default from the open-file limit.
    pub per_worker: Option<u64>,
    /// Sessions per source address; default `shard::DEFAULT_PER_SOURCE`.
    pub per_source: Option<u64>,
    pub gateway_pids: Vec<u32>,
    /// Storm: drain this gateway after the hold.
    pub storm_pid: Option<u32>,
    pub storm_timeout: Duration,
    /// Chat after the hold.
    pub chat: Option<ChatSpec>,
    pub progress_bar: bool,
    /// The `loadgen` executable to start workers from.
    pub exe: PathBuf,
}

fn sum_rss(pids: &[u32]) -> Option<u64> {
    let mut t = 0;
    for p in pids {
        t += procfs::rss_kib(*p).ok()?;
    }
    Some(t)
}

/// The gateways' summed RSS once it has stopped moving: a gateway that has
/// just said `listening` may still be touching its startup memory, which
/// would otherwise be counted against the sessions. (No event says "done",
/// so this polls: two equal readings 200 ms apart, at most 5 s.)
fn settled_rss(pids: &[u32]) -> Option<u64> {
    let mut last = sum_rss(pids)?;
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = sum_rss(pids)?;
        if now == last {
            break;
        }
        last = now;
    }
    Some(last)
}

fn sum_cpu(pids: &[u32]) -> Option<u64> {
    let mut t = 0;
    for p in pids {
        t += procfs::cpu_us(*p).ok()?;
    }
    Some(t)
}

struct Sampler {
    start: Instant,
    next: Instant,
    series: Vec<Sample>,
}

impl Sampler {
    fn tick(&mut self, fleet: &Fleet, gateways: &[u32]) {
        if Instant::now() < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        self.series.push(Sample {
            t_s: self.start.elapsed().as_secs_f64(),
            sessions_up: fleet.total().up,
            gateway_rss_kib: gateways
                .iter()
                .filter_map(|p| procfs::rss_kib(*p).ok())
                .sum(),
            loadgen_rss_kib: fleet
                .pids()
                .iter()
                .filter_map(|p| procfs::rss_kib(*p).ok())
                .sum(),
            slab_kib: procfs::slab_kib().unwrap_or(0),
        });
    }
}

/// Runs `spec` to the end (or until `stop` is set) and reports.
pub fn run(spec: &RunSpec, stop: &AtomicBool) -> anyhow::Result<Report> {
    let nofile = procfs::raise_nofile()?;
    let per_worker = spec.per_worker.unwrap_or_else(|| shard::per_worker(nofile));
    let per_source = spec
        .per_source
        .unwrap_or(shard::DEFAULT_PER_SOURCE)
        .clamp(1, shard::PORTS);
    let shares = shard::split(spec.sessions, per_worker, spec.min_workers);
    let mut report = Report {
        sessions_target: spec.sessions,
        workers: shares.len() as u64,
        source_addresses: shard::sources_needed(spec.sessions, per_source),
        ..Report::default()
    };
    let n_workers = shares.len().max(1) as f64;
    // Workers stop by themselves after every phase could have run, plus slack.
    let chat_bound = spec.chat.map_or(Duration::ZERO, |c| {
        c.duration + CHAT_DRAIN_MAX + CHAT_JOIN_TIMEOUT
    });
    let total_bound =
        spec.ramp_timeout + spec.hold + spec.storm_timeout + chat_bound + Duration::from_secs(60);
    let specs: Vec<WorkerSpec> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| WorkerSpec {
            id: i as u32,
            addr: spec.addr,
            share: *share,
            per_source,
            uin_base: spec.uin_base,
            secret_hex: hex::encode(&spec.secret),
            token_ttl_s: 86_400,
            rate: spec.rate / n_workers,
            max_inflight: spec.max_inflight,
            forced_heartbeat_ms: spec.forced_heartbeat_ms,
            network: spec.network,
            connect_timeout_ms: 10_000,
            login_timeout_ms: 15_000,
            reconnect_on_goaway: spec.storm_pid.is_some(),
            deadline_ms: total_bound.as_millis() as u64,
            progress_ms: 100,
        })
        .collect();

    let gw = &spec.gateway_pids;
    let rss_before = settled_rss(gw).filter(|_| !gw.is_empty());
    report.gateway_rss_before_kib = rss_before;
    report.slab_before_kib = procfs::slab_kib().unwrap_or(0);

    let start_us = unix_us();
    let mut fleet = Fleet::spawn(&spec.exe, &specs).context("starting workers")?;
    let mut sampler = Sampler {
        start: Instant::now(),
        next: Instant::now(),
        series: Vec::new(),
    };

    // Ramp.
    let bar = if spec.progress_bar {
        ProgressBar::new(spec.sessions)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} up, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ramp_deadline = Instant::now() + spec.ramp_timeout;
    while !fleet.all_ramp_done() && !stop.load(Ordering::Relaxed) {
        if Instant::now() >= ramp_deadline {
            report
                .notes
                .push(format!("ramp timed out after {:?}", spec.ramp_timeout));
            break;
        }
        fleet.pump(Duration::from_millis(100))?;
        let t = fleet.total();
        bar.set_position(t.up);
        let secs = unix_us().saturating_sub(start_us) as f64 / 1e6;
        bar.set_message(format!(
            "{:.0}/s, failed {} lost {}",
            t.logged_in as f64 / secs.max(1e-3),
            t.failed_total(),
            t.lost_total()
        ));
        sampler.tick(&fleet, gw);
    }
    bar.finish_and_clear();
    let ramp_end = fleet.ramp_end_unix_us.iter().copied().max().unwrap_or(0);
    report.ramp_s = ramp_end.saturating_sub(start_us) as f64 / 1e6;
    let after_ramp = fleet.total();
    if report.ramp_s > 0.0 {
        report.login_rate_per_s = after_ramp.logged_in as f64 / report.ramp_s;
    }
    report.gateway_rss_after_kib = sum_rss(gw).filter(|_| !gw.is_empty());
    report.slab_after_kib = procfs::slab_kib().unwrap_or(0);
    if let (Some(b), Some(a)) = (report.gateway_rss_before_kib, report.gateway_rss_after_kib)
        && after_ramp.up > 0
    {
        report.gateway_bytes_per_session =
            Some((a as f64 - b as f64) * 1024.0 / after_ramp.up as f64);
    }
    if after_ramp.up > 0 {
        let grown = report.slab_after_kib as f64 - report.slab_before_kib as f64;
        report.kernel_bytes_per_socket = Some(grown * 1024.0 / (2 * after_ramp.up) as f64);
    }

    // Hold, with the heartbeat window inside it.
    let hold_start = Instant::now();
    let hold_end = hold_start + spec.hold;
    let window_start = hold_start + spec.warmup.min(spec.hold / 2);
    let mut window: Option<(Instant, u64, Option<u64>)> = None;
    let hold_bar = if spec.progress_bar {
        ProgressBar::new(spec.hold.as_secs().max(1))
    } else {
        ProgressBar::hidden()
    };
    hold_bar.set_style(
        ProgressStyle::with_template("hold {elapsed_precise} [{bar:40}] {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while Instant::now() < hold_end && !stop.load(Ordering::Relaxed) {
        if window.is_none() && Instant::now() >= window_start {
            let cpu = sum_cpu(gw).filter(|_| !gw.is_empty());
            let c = fleet.snap(1, Duration::from_secs(10))?;
            window = Some((Instant::now(), c.hb_acked, cpu));
        }
        fleet.pump(Duration::from_millis(200))?;
        let t = fleet.total();
        hold_bar.set_position(hold_start.elapsed().as_secs());
        hold_bar.set_message(format!(
            "up {} lost {} hb acked {}",
            t.up,
            t.lost_total(),
            t.hb_acked
        ));
        sampler.tick(&fleet, gw);
    }
    hold_bar.finish_and_clear();
    report.hold_s = hold_start.elapsed().as_secs_f64();
    let cpu_end = sum_cpu(gw).filter(|_| !gw.is_empty());
    let at_end = fleet.snap(2, Duration::from_secs(10))?;
    report.held_at_end = at_end.up;
    if let Some((t0, acked0, cpu0)) = window {
        report.hb_window_s = t0.elapsed().as_secs_f64();
        report.hb_window_acked = at_end.hb_acked - acked0;
        if let (Some(c0), Some(c1)) = (cpu0, cpu_end) {
            report.gateway_cpu_us_in_window = Some(c1 - c0);
            if report.hb_window_acked > 0 {
                report.gateway_cpu_us_per_heartbeat =
                    Some((c1 - c0) as f64 / report.hb_window_acked as f64);
            }
        }
    }

    if let Some(c) = spec.chat
        && !stop.load(Ordering::Relaxed)
    {
        report.chat = Some(chat_phase(
            &mut fleet,
            &c,
            spec.sessions,
            stop,
            &mut sampler,
            gw,
        )?);
    }
    if let Some(pid) = spec.storm_pid
        && !stop.load(Ordering::Relaxed)
    {
        report.storm = Some(storm(
            &mut fleet,
            pid,
            spec.storm_timeout,
            stop,
            &mut sampler,
            gw,
        )?);
    }
    if stop.load(Ordering::Relaxed) {
        report
            .notes
            .push("interrupted: figures cover the run until then".into());
    }

    let (stats, peak, missing) = fleet.stop(Duration::from_secs(30));
    drop(fleet);
    if missing > 0 {
        report
            .notes
            .push(format!("{missing} worker(s) sent no final report"));
    }
    let k = &stats.counters;
    report.logged_in = after_ramp.logged_in;
    report.failed = k.failed_total();
    report.failed_by_reason = k.failed.clone();
    report.lost = k.lost_total();
    report.lost_by_reason = k.lost.clone();
    report.heartbeats_sent = k.hb_sent;
    report.heartbeats_acked = k.hb_acked;
    report.connect_us = Pct::from(&stats.connect_us);
    report.login_us = Pct::from(&stats.login_us);
    report.heartbeat_rtt_us = Pct::from(&stats.hb_rtt_us);
    report.loadgen_peak_rss_kib = peak;
    if let Some(c) = report.chat.as_mut() {
        c.e2e_us = Pct::from(&stats.chat_e2e_us);
    }
    if let Some(s) = report.storm.as_mut() {
        s.relogin_ms = Pct::from(&stats.relogin_ms);
        s.goaway_after_ms = Pct::from(&stats.goaway_after_ms);
        s.all_back_ms = s.relogin_ms.max;
    }
    report.series = sampler.series;
    Ok(report)
}

/// Rooms: JOIN first. Then SEND at the rate for the duration, wait for
/// the last PUSHes, and count.
fn chat_phase(
    fleet: &mut Fleet,
    c: &ChatSpec,
    sessions: u64,
    stop: &AtomicBool,
    sampler: &mut Sampler,
    gw: &[u32],
) -> anyhow::Result<ChatReport> {
    let before = fleet.snap(10, Duration::from_secs(10))?;
    if let Mode::Rooms { .. } = c.mode {
        fleet.send_all(ToWorker::ChatJoin { mode: c.mode });
        let end = Instant::now() + CHAT_JOIN_TIMEOUT;
        loop {
            let t = fleet.total();
            let answered = t.chat_joined
                + t.chat_errors
                    .iter()
                    .filter(|(k, _)| k.starts_with("join"))
                    .map(|(_, v)| v)
                    .sum::<u64>();
            if answered >= before.up || Instant::now() >= end || stop.load(Ordering::Relaxed) {
                break;
            }
            fleet.pump(Duration::from_millis(100))?;
        }
    }
    let start = Instant::now();
    fleet.send_all(ToWorker::ChatStart(ChatPlan {
        mode: c.mode,
        rate: c.rate,
        sessions,
        payload: c.payload,
        duration_ms: c.duration.as_millis() as u64,
        window: c.window,
        senders: c.senders,
    }));
    // Drain: at least CHAT_DRAIN, then until every SEND has its answer
    // (an overloaded run can be seconds behind), at most CHAT_DRAIN_MAX.
    let answered = |t: &Counters| t.chat_acked + send_errors(t) >= t.chat_sent;
    while !stop.load(Ordering::Relaxed) {
        let waited = start.elapsed().saturating_sub(c.duration);
        let sending = start.elapsed() < c.duration;
        if !sending
            && waited >= CHAT_DRAIN
            && (answered(&fleet.total()) || waited >= CHAT_DRAIN_MAX)
        {
            break;
        }
        fleet.pump(Duration::from_millis(200))?;
        sampler.tick(fleet, gw);
    }
    let after = fleet.snap(11, Duration::from_secs(10))?;
    let acked = after.chat_acked - before.chat_acked;
    let sent = after.chat_sent - before.chat_sent;
    let send_errors = send_errors(&after) - send_errors(&before);
    let received = after.chat_received - before.chat_received;
    let duplicates = after.chat_duplicates - before.chat_duplicates;
    let expected = chat::expected(c.mode, sessions, acked, &after.chat_room_high);
    Ok(ChatReport {
        mode: match c.mode {
            Mode::Pairs => "pairs".into(),
            Mode::Rooms { rooms } => format!("rooms:{rooms}"),
        },
        rate_per_s: c.rate,
        payload_bytes: c.payload,
        duration_s: c.duration.as_secs_f64(),
        sent,
        acked,
        unanswered: sent.saturating_sub(acked + send_errors),
        errors: after.chat_errors,
        expected,
        received,
        duplicates,
        out_of_order: after.chat_out_of_order - before.chat_out_of_order,
        lost: expected.saturating_sub(received - duplicates),
        window: c.window,
        senders: c.senders,
        acked_per_s: acked as f64 / c.duration.as_secs_f64().max(1e-9),
        delivered_per_s: (received - duplicates) as f64 / c.duration.as_secs_f64().max(1e-9),
        e2e_us: Pct::default(),
    })
}

/// SENDs answered with an error status.
fn send_errors(t: &Counters) -> u64 {
    t.chat_errors
        .iter()
        .filter(|(k, _)| k.starts_with("send"))
        .map(|(_, v)| v)
        .sum()
}

/// SIGTERMs `pid` and waits until every session it sent away is back.
fn storm(
    fleet: &mut Fleet,
    pid: u32,
    timeout: Duration,
    stop: &AtomicBool,
    sampler: &mut Sampler,
    gw: &[u32],
) -> anyhow::Result<StormReport> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let before = fleet.total();
    fleet.send_all(ToWorker::StormStart);
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
        .with_context(|| format!("SIGTERM to gateway {pid}"))?;
    let end = Instant::now() + timeout;
    let mut out = StormReport {
        drained_pid: pid,
        ..StormReport::default()
    };
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        fleet.pump(Duration::from_millis(100))?;
        sampler.tick(fleet, gw);
        let t = fleet.total();
        let goaways = t.goaways - before.goaways;
        let relogins = t.relogins - before.relogins;
        // Done once the drained gateway is gone and everyone it held is back.
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || procfs::rss_kib(pid).is_err();
        if gone && relogins >= goaways && t.up >= before.up {
            out.complete = true;
            break;
        }
    }
    let t = fleet.snap(3, Duration::from_secs(10))?;
    out.goaways = t.goaways - before.goaways;
    out.relogins = t.relogins - before.relogins;
    out.up_after = t.up;
    Ok(out)
}
