//! `gateway doctor --sessions N`: the preflight check of kernel settings and
//! process limits for N sessions, as written up in `tuning/README.md`.
//!
//! Sans-io: [`gather`] turns file contents into [`Facts`], [`check`] does
//! the arithmetic and writes the advice as [`Finding`]s, and only
//! [`read_live`] / [`run_live`] touch `/proc`. Std only, so the module also
//! builds on its own: `rustc --edition 2024 --test gateway/src/doctor.rs`.
//!
//! Measured inputs (kernel 6.18, `python3 tuning/measure_socket_mem.py`):
//! an idle established TCP socket in an epoll set costs 4,225 B of slab,
//! one small unread message charges one 4 KiB page of `tcp_mem`, and a
//! TIME_WAIT entry costs 256 B.

use std::fmt;
use std::io::{self, Write};

/// File descriptors one gateway process needs besides its sessions:
/// per-thread epoll, waker and listener, upstream links, metrics, logs.
pub const FD_RESERVE: u64 = 1_024;
/// Open files and conntrack entries left for the rest of the box.
pub const SYSTEM_RESERVE: u64 = 65_536;
/// Largest listen backlog asked for: the most the 16-bit backlog field of
/// older kernels held; a queue the accept loop drains needs no more.
pub const BACKLOG_CAP: u64 = 65_535;
/// `tcp_mem` pages budgeted per session: one page measured per socket with
/// one small unacknowledged message, doubled so a broadcast to every
/// session stays below pressure with a second message behind it.
pub const TCP_MEM_PAGES_PER_SESSION: u64 = 2;
/// Slab bytes per idle established socket in an epoll set (measured).
pub const KERNEL_BYTES_PER_IDLE_SOCKET: u64 = 4_225;

/// Where the sysctl advice goes.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/60-millgate.conf";

/// Kernel settings and process limits as read; `None` means "could not
/// read" except where a field says otherwise. Limits of `unlimited` read as
/// `u64::MAX`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `fs.file-max`: open files, system wide.
    pub file_max: Option<u64>,
    /// `fs.nr_open`: the ceiling for any process's RLIMIT_NOFILE.
    pub nr_open: Option<u64>,
    /// RLIMIT_NOFILE of this process, soft.
    pub nofile_soft: Option<u64>,
    /// RLIMIT_NOFILE of this process, hard.
    pub nofile_hard: Option<u64>,
    /// `net.core.somaxconn`: cap on every listen backlog.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections per listener,
    /// enforced only while `tcp_syncookies` is 0.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_syncookies`: 0 off, 1 when the SYN queue overflows, 2 always.
    pub tcp_syncookies: Option<u64>,
    /// `net.core.netdev_max_backlog`: per-CPU input queue, packets.
    pub netdev_max_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range`: first and last ephemeral port.
    pub ip_local_port_range: Option<(u64, u64)>,
    /// `net.ipv4.tcp_mem`: low, pressure, high, in pages.
    pub tcp_mem: Option<[u64; 3]>,
    /// `net.ipv4.tcp_rmem`: min, default, max, in bytes.
    pub tcp_rmem: Option<[u64; 3]>,
    /// `net.ipv4.tcp_wmem`: min, default, max, in bytes.
    pub tcp_wmem: Option<[u64; 3]>,
    /// `net.netfilter.nf_conntrack_max`; `None` when conntrack is not loaded.
    pub nf_conntrack_max: Option<u64>,
    /// `net.ipv4.tcp_max_tw_buckets`: TIME_WAIT entries.
    pub tcp_max_tw_buckets: Option<u64>,
    /// `net.ipv4.tcp_max_orphans`: closed sockets still finishing.
    pub tcp_max_orphans: Option<u64>,
    /// `net.ipv4.tcp_fin_timeout`: seconds an orphan waits in FIN_WAIT_2.
    pub tcp_fin_timeout: Option<u64>,
    /// `net.ipv4.tcp_tw_recycle`; `None` when the kernel has no such knob
    /// (it was removed in Linux 4.12).
    pub tcp_tw_recycle: Option<u64>,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub mem_total: Option<u64>,
}

/// How a setting compares with what N sessions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Enough for N.
    Ok,
    /// Too low (or, for `tcp_tw_recycle`, dangerously on): fails the check.
    Short,
    /// Could not be read: fails the check, since nothing is known.
    Unknown,
    /// Not a function of N; printed for the operator, never fails.
    Info,
}

/// One checked setting: what it is, what it needs and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Finding {
    /// The sysctl key or limit name, as an operator would search for it.
    pub setting: &'static str,
    pub status: Status,
    /// The value as read, or `unreadable`.
    pub current: String,
    /// What N needs, e.g. `>= 1001024`.
    pub required: String,
    /// The arithmetic behind `required`.
    pub why: String,
    /// Lines to add (each prefixed by the file it goes in); empty when Ok.
    pub fix: Vec<String>,
}

impl Finding {
    /// True when this finding makes the preflight fail.
    pub fn fails(&self) -> bool {
        matches!(self.status, Status::Short | Status::Unknown)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok",
            Status::Short => "SHORT",
            Status::Unknown => "UNKNOWN",
            Status::Info => "info",
        };
        if self.status == Status::Info {
            writeln!(
                f,
                "[{tag:>7}] {}: current {}; {}",
                self.setting, self.current, self.required
            )?;
        } else {
            writeln!(
                f,
                "[{tag:>7}] {}: current {}, need {}",
                self.setting, self.current, self.required
            )?;
        }
        writeln!(f, "          why: {}", self.why)?;
        for line in &self.fix {
            writeln!(f, "          fix: {line}")?;
        }
        Ok(())
    }
}

/// True when no finding fails.
pub fn passes(findings: &[Finding]) -> bool {
    !findings.iter().any(Finding::fails)
}

/// A setting that must be at least `need`.
fn at_least(
    setting: &'static str,
    current: Option<u64>,
    need: u64,
    why: String,
    fix: Vec<String>,
) -> Finding {
    let status = match current {
        None => Status::Unknown,
        Some(v) if v >= need => Status::Ok,
        Some(_) => Status::Short,
    };
    Finding {
        setting,
        status,
        current: current.map_or_else(|| "unreadable".to_owned(), show),
        required: format!(">= {need}"),
        why,
        fix: if status == Status::Ok {
            Vec::new()
        } else {
            fix
        },
    }
}

fn sysctl_line(key: &str, value: impl fmt::Display) -> String {
    format!("{SYSCTL_FILE}: {key} = {value}")
}

fn show(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_owned()
    } else {
        v.to_string()
    }
}

fn info(setting: &'static str, current: String, required: String, why: String) -> Finding {
    Finding {
        setting,
        status: Status::Info,
        current,
        required,
        why,
        fix: Vec::new(),
    }
}

fn triple(v: Option<[u64; 3]>) -> String {
    v.map_or_else(
        || "unreadable".to_owned(),
        |[a, b, c]| format!("{a} {b} {c}"),
    )
}

/// Compares `facts` with what `sessions` concurrent sessions on one gateway
/// process need, in the order `tuning/README.md` explains them.
pub fn check(facts: &Facts, sessions: u64) -> Vec<Finding> {
    let n = sessions;
    let fds = n.saturating_add(FD_RESERVE);
    let system = n.saturating_add(SYSTEM_RESERVE);
    let backlog = n.clamp(1, BACKLOG_CAP);
    let mut out = Vec::new();

    out.push(at_least(
        "fs.file-max",
        facts.file_max,
        system,
        format!(
            "one open file per session socket ({n}) + {SYSTEM_RESERVE} for the rest of the box"
        ),
        vec![sysctl_line("fs.file-max", system)],
    ));
    out.push(at_least(
        "fs.nr_open",
        facts.nr_open,
        fds,
        format!("RLIMIT_NOFILE cannot exceed it: {n} sessions + {FD_RESERVE} reserved fds"),
        vec![sysctl_line("fs.nr_open", fds)],
    ));
    let nofile_fix = vec![
        format!("/etc/security/limits.d/millgate.conf: millgate soft nofile {fds}"),
        format!("/etc/security/limits.d/millgate.conf: millgate hard nofile {fds}"),
        format!("systemd unit [Service]: LimitNOFILE={fds}"),
    ];
    out.push(at_least(
        "RLIMIT_NOFILE (soft)",
        facts.nofile_soft,
        fds,
        format!("one fd per session ({n}) + {FD_RESERVE} for epoll, wakers, listeners, upstream links, logs"),
        nofile_fix.clone(),
    ));
    out.push(at_least(
        "RLIMIT_NOFILE (hard)",
        facts.nofile_hard,
        fds,
        "the soft limit can only be raised up to the hard limit".to_owned(),
        nofile_fix,
    ));
    out.push(at_least(
        "net.core.somaxconn",
        facts.somaxconn,
        backlog,
        format!("every listen() backlog is capped here; a reconnect storm of min({n}, {BACKLOG_CAP}) must queue"),
        vec![sysctl_line("net.core.somaxconn", backlog)],
    ));
    out.push(match facts.tcp_syncookies {
        Some(cookies) if cookies > 0 => info(
            "net.ipv4.tcp_max_syn_backlog",
            facts
                .tcp_max_syn_backlog
                .map_or_else(|| "unreadable".to_owned(), show),
            format!("unused while net.ipv4.tcp_syncookies = {cookies}"),
            "with syncookies the half-open queue is bounded by the listen backlog (somaxconn)"
                .to_owned(),
        ),
        _ => at_least(
            "net.ipv4.tcp_max_syn_backlog",
            facts.tcp_max_syn_backlog,
            backlog,
            format!("syncookies off: half-open handshakes per listener in a reconnect storm, min({n}, {BACKLOG_CAP})"),
            vec![sysctl_line("net.ipv4.tcp_max_syn_backlog", backlog)],
        ),
    });
    out.push(info(
        "net.core.netdev_max_backlog",
        facts
            .netdev_max_backlog
            .map_or_else(|| "unreadable".to_owned(), show),
        "not a function of N".to_owned(),
        "per-CPU packet queue (RPS, loopback); double it while column 2 of /proc/net/softnet_stat grows".to_owned(),
    ));
    out.push(port_range(facts.ip_local_port_range, n));
    out.push(tcp_mem(facts.tcp_mem, n));
    out.push(buffers("net.ipv4.tcp_rmem", facts.tcp_rmem, n));
    out.push(buffers("net.ipv4.tcp_wmem", facts.tcp_wmem, n));
    out.push(match facts.nf_conntrack_max {
        None => Finding {
            setting: "net.netfilter.nf_conntrack_max",
            status: Status::Ok,
            current: "conntrack not loaded".to_owned(),
            required: format!(">= {system} if loaded"),
            why: "no connection tracking, nothing to size".to_owned(),
            fix: Vec::new(),
        },
        current => at_least(
            "net.netfilter.nf_conntrack_max",
            current,
            system,
            format!("one entry per tracked session ({n}) + {SYSTEM_RESERVE}; or NOTRACK the gateway port"),
            vec![sysctl_line("net.netfilter.nf_conntrack_max", system)],
        ),
    });
    out.push(at_least(
        "net.ipv4.tcp_max_tw_buckets",
        facts.tcp_max_tw_buckets,
        n,
        format!("a drain closes all {n} sessions server-first; each waits 60 s in TIME_WAIT (256 B each)"),
        vec![sysctl_line("net.ipv4.tcp_max_tw_buckets", n)],
    ));
    out.push(at_least(
        "net.ipv4.tcp_max_orphans",
        facts.tcp_max_orphans,
        n,
        format!("a drain closes all {n} sockets at once; each is an orphan until its FIN is acknowledged"),
        vec![sysctl_line("net.ipv4.tcp_max_orphans", n)],
    ));
    out.push(info(
        "net.ipv4.tcp_fin_timeout",
        facts
            .tcp_fin_timeout
            .map_or_else(|| "unreadable".to_owned(), show),
        "not a function of N (kernel default 60)".to_owned(),
        "how long an orphan whose peer vanished sits in FIN_WAIT_2; bounded by tcp_max_orphans"
            .to_owned(),
    ));
    out.push(match facts.tcp_tw_recycle {
        None | Some(0) => Finding {
            setting: "net.ipv4.tcp_tw_recycle",
            status: Status::Ok,
            current: facts
                .tcp_tw_recycle
                .map_or_else(|| "absent (removed in Linux 4.12)".to_owned(), show),
            required: "0 or absent".to_owned(),
            why: "drops SYNs from clients behind NAT".to_owned(),
            fix: Vec::new(),
        },
        Some(v) => Finding {
            setting: "net.ipv4.tcp_tw_recycle",
            status: Status::Short,
            current: v.to_string(),
            required: "0 or absent".to_owned(),
            why: "per-host timestamp checks drop SYNs from clients behind one NAT".to_owned(),
            fix: vec![sysctl_line("net.ipv4.tcp_tw_recycle", 0)],
        },
    });
    out.push(memory(facts.mem_total, n));
    out
}

fn port_range(range: Option<(u64, u64)>, n: u64) -> Finding {
    let (current, required) = match range {
        Some((lo, hi)) if hi >= lo => {
            let ports = hi - lo + 1;
            (
                format!("{lo} {hi} ({ports} ports)"),
                format!(
                    "a load generator here needs {} source addresses per destination",
                    n.div_ceil(ports)
                ),
            )
        }
        Some((lo, hi)) => (format!("{lo} {hi} (empty)"), "a non-empty range".to_owned()),
        None => ("unreadable".to_owned(), "a non-empty range".to_owned()),
    };
    info(
        "net.ipv4.ip_local_port_range",
        current,
        required,
        "accepted sessions use no ephemeral ports; upstream links use one per link, clients one per (source, destination)".to_owned(),
    )
}

fn tcp_mem(current: Option<[u64; 3]>, n: u64) -> Finding {
    let pressure = n.saturating_mul(TCP_MEM_PAGES_PER_SESSION);
    // The kernel's own boot-time ratios: low = 3/4 pressure, high = 3/2.
    let need = [pressure / 4 * 3, pressure, pressure / 2 * 3];
    let status = match current {
        None => Status::Unknown,
        Some(cur) if cur.iter().zip(need).all(|(c, w)| *c >= w) => Status::Ok,
        Some(_) => Status::Short,
    };
    // Never advise lowering an element that is already higher.
    let advise = current.map_or(need, |cur| {
        [
            cur[0].max(need[0]),
            cur[1].max(need[1]),
            cur[2].max(need[2]),
        ]
    });
    Finding {
        setting: "net.ipv4.tcp_mem",
        status,
        current: triple(current),
        required: format!(">= {} {} {} pages", need[0], need[1], need[2]),
        why: format!(
            "pressure = {n} sessions x {TCP_MEM_PAGES_PER_SESSION} pages (one page measured per socket with a queued message); low and high in the kernel's 3/4 and 3/2 ratios"
        ),
        fix: if status == Status::Ok {
            Vec::new()
        } else {
            vec![sysctl_line(
                "net.ipv4.tcp_mem",
                format!("{} {} {}", advise[0], advise[1], advise[2]),
            )]
        },
    }
}

fn buffers(setting: &'static str, current: Option<[u64; 3]>, n: u64) -> Finding {
    let why = match current {
        Some([_, default, _]) => format!(
            "idle sockets hold no buffer; if all {n} filled their default it would be {} MiB, so tcp_mem is the real cap",
            n.saturating_mul(default) >> 20
        ),
        None => "idle sockets hold no buffer; tcp_mem is the real cap".to_owned(),
    };
    info(
        setting,
        triple(current),
        "not a function of N".to_owned(),
        why,
    )
}

fn memory(mem_total: Option<u64>, n: u64) -> Finding {
    let kernel = n.saturating_mul(KERNEL_BYTES_PER_IDLE_SOCKET);
    info(
        "MemTotal",
        mem_total.map_or_else(|| "unreadable".to_owned(), |m| format!("{} MiB", m >> 20)),
        format!(
            "{} MiB kernel + the gateway's own bytes per session",
            kernel >> 20
        ),
        format!(
            "{n} idle sockets x {KERNEL_BYTES_PER_IDLE_SOCKET} B of slab (measured); see tuning/README.md for the budget"
        ),
    )
}

/// Parses one unsigned integer, as in `/proc/sys/fs/file-max`.
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Parses a whitespace-separated pair, as in `ip_local_port_range`.
pub fn parse_pair(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace().map(str::parse);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Some((a, b)),
        _ => None,
    }
}

/// Parses a whitespace-separated triple, as in `tcp_mem`.
pub fn parse_triple(text: &str) -> Option<[u64; 3]> {
    let mut it = text.split_whitespace().map(str::parse);
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Some([a, b, c]),
        _ => None,
    }
}

/// Parses the `Max open files` row of `/proc/<pid>/limits` into
/// (soft, hard); `unlimited` reads as `u64::MAX`.
pub fn parse_nofile(limits: &str) -> (Option<u64>, Option<u64>) {
    let limit = |word: Option<&str>| match word? {
        "unlimited" => Some(u64::MAX),
        w => w.parse().ok(),
    };
    for line in limits.lines() {
        if let Some(rest) = line.strip_prefix("Max open files") {
            let mut words = rest.split_whitespace();
            return (limit(words.next()), limit(words.next()));
        }
    }
    (None, None)
}

/// Parses `MemTotal` from `/proc/meminfo` into bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Builds [`Facts`] from a reader of `/proc` paths (`None`: could not read).
pub fn gather(read: impl Fn(&str) -> Option<String>) -> Facts {
    let sys = |key: &str| read(&format!("/proc/sys/{}", key.replace('.', "/")));
    let num = |key: &str| sys(key).as_deref().and_then(parse_u64);
    let tri = |key: &str| sys(key).as_deref().and_then(parse_triple);
    let (nofile_soft, nofile_hard) = read("/proc/self/limits")
        .as_deref()
        .map_or((None, None), parse_nofile);
    Facts {
        file_max: num("fs.file-max"),
        nr_open: num("fs.nr_open"),
        nofile_soft,
        nofile_hard,
        somaxconn: num("net.core.somaxconn"),
        tcp_max_syn_backlog: num("net.ipv4.tcp_max_syn_backlog"),
        tcp_syncookies: num("net.ipv4.tcp_syncookies"),
        netdev_max_backlog: num("net.core.netdev_max_backlog"),
        ip_local_port_range: sys("net.ipv4.ip_local_port_range")
            .as_deref()
            .and_then(parse_pair),
        tcp_mem: tri("net.ipv4.tcp_mem"),
        tcp_rmem: tri("net.ipv4.tcp_rmem"),
        tcp_wmem: tri("net.ipv4.tcp_wmem"),
        nf_conntrack_max: num("net.netfilter.nf_conntrack_max"),
        tcp_max_tw_buckets: num("net.ipv4.tcp_max_tw_buckets"),
        tcp_max_orphans: num("net.ipv4.tcp_max_orphans"),
        tcp_fin_timeout: num("net.ipv4.tcp_fin_timeout"),
        tcp_tw_recycle: num("net.ipv4.tcp_tw_recycle"),
        mem_total: read("/proc/meminfo").as_deref().and_then(parse_mem_total),
    }
}

/// Reads the live kernel settings and this process's limits.
pub fn read_live() -> Facts {
    gather(|path| std::fs::read_to_string(path).ok())
}

/// Writes the findings and a one-line verdict.
pub fn report(findings: &[Finding], sessions: u64, out: &mut dyn Write) -> io::Result<bool> {
    writeln!(out, "millgate doctor: checking for {sessions} sessions")?;
    for f in findings {
        write!(out, "{f}")?;
    }
    let short = findings.iter().filter(|f| f.fails()).count();
    let ok = short == 0;
    if ok {
        writeln!(out, "verdict: ready for {sessions} sessions")?;
    } else {
        writeln!(
            out,
            "verdict: {short} setting(s) short for {sessions} sessions; add the fix lines, then `sysctl --system` and restart the service"
        )?;
    }
    Ok(ok)
}

/// Reads the live kernel settings and this process's limits, prints each
/// check, returns Ok(true) when nothing is short for `sessions`.
pub fn run_live(sessions: u64, out: &mut dyn Write) -> io::Result<bool> {
    let findings = check(&read_live(), sessions);
    report(&findings, sessions, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of a stock 6.18 kernel on a 24 GiB box (read on the dev box).
    fn stock() -> Facts {
        Facts {
            file_max: Some(2_466_170),
            nr_open: Some(1_048_576),
            nofile_soft: Some(20_000),
            nofile_hard: Some(20_000),
            somaxconn: Some(4_096),
            tcp_max_syn_backlog: Some(2_048),
            tcp_syncookies: Some(1),
            netdev_max_backlog: Some(1_000),
            ip_local_port_range: Some((32_768, 60_999)),
            tcp_mem: Some([287_898, 383_867, 575_796]),
            tcp_rmem: Some([4_096, 131_072, 33_554_432]),
            tcp_wmem: Some([4_096, 16_384, 4_194_304]),
            nf_conntrack_max: Some(262_144),
            tcp_max_tw_buckets: Some(131_072),
            tcp_max_orphans: Some(131_072),
            tcp_fin_timeout: Some(60),
            tcp_tw_recycle: None,
            mem_total: Some(24_105 << 20),
        }
    }

    fn find<'a>(fs: &'a [Finding], setting: &str) -> &'a Finding {
        fs.iter()
            .find(|f| f.setting == setting)
            .unwrap_or_else(|| panic!("no finding for {setting}"))
    }

    #[test]
    fn stock_box_is_short_for_a_million() {
        let fs = check(&stock(), 1_000_000);
        let short: Vec<_> = fs.iter().filter(|f| f.fails()).map(|f| f.setting).collect();
        assert_eq!(
            short,
            [
                "RLIMIT_NOFILE (soft)",
                "RLIMIT_NOFILE (hard)",
                "net.core.somaxconn",
                "net.ipv4.tcp_mem",
                "net.netfilter.nf_conntrack_max",
                "net.ipv4.tcp_max_tw_buckets",
                "net.ipv4.tcp_max_orphans",
            ]
        );
        assert!(!passes(&fs));
        let nofile = find(&fs, "RLIMIT_NOFILE (soft)");
        assert_eq!(nofile.required, ">= 1001024");
        assert_eq!(
            nofile.fix[0],
            "/etc/security/limits.d/millgate.conf: millgate soft nofile 1001024"
        );
        assert_eq!(nofile.fix[2], "systemd unit [Service]: LimitNOFILE=1001024");
        assert_eq!(find(&fs, "fs.nr_open").status, Status::Ok);
        let ten = check(&stock(), 10_000_000);
        assert_eq!(
            find(&ten, "fs.nr_open").fix,
            ["/etc/sysctl.d/60-millgate.conf: fs.nr_open = 10001024"]
        );
        assert_eq!(find(&ten, "fs.file-max").required, ">= 10065536");
    }

    #[test]
    fn stock_box_is_fine_for_two_thousand() {
        let fs = check(&stock(), 2_000);
        assert!(passes(&fs), "{fs:#?}");
        assert!(fs.iter().all(|f| f.fix.is_empty()));
    }

    #[test]
    fn backlog_is_capped() {
        let fs = check(&stock(), 5_000_000);
        assert_eq!(find(&fs, "net.core.somaxconn").required, ">= 65535");
        let small = check(&stock(), 3_000);
        assert_eq!(find(&small, "net.core.somaxconn").required, ">= 3000");
        assert_eq!(find(&small, "net.core.somaxconn").status, Status::Ok);
    }

    #[test]
    fn syn_backlog_counts_only_without_syncookies() {
        let mut facts = stock();
        let fs = check(&facts, 1_000_000);
        assert_eq!(
            find(&fs, "net.ipv4.tcp_max_syn_backlog").status,
            Status::Info
        );
        facts.tcp_syncookies = Some(0);
        let fs = check(&facts, 1_000_000);
        let syn = find(&fs, "net.ipv4.tcp_max_syn_backlog");
        assert_eq!(syn.status, Status::Short);
        assert_eq!(
            syn.fix,
            ["/etc/sysctl.d/60-millgate.conf: net.ipv4.tcp_max_syn_backlog = 65535"]
        );
    }

    #[test]
    fn tcp_mem_never_advises_lowering() {
        let mut facts = stock();
        facts.tcp_mem = Some([10_000_000, 100, 10_000_000]);
        let fs = check(&facts, 1_000_000);
        let mem = find(&fs, "net.ipv4.tcp_mem");
        assert_eq!(mem.status, Status::Short);
        assert_eq!(mem.required, ">= 1500000 2000000 3000000 pages");
        assert_eq!(
            mem.fix,
            ["/etc/sysctl.d/60-millgate.conf: net.ipv4.tcp_mem = 10000000 2000000 10000000"]
        );
    }

    #[test]
    fn unreadable_fails_and_conntrack_absent_passes() {
        let mut facts = check_ready(1_000_000);
        facts.nr_open = None;
        let fs = check(&facts, 1_000_000);
        assert_eq!(find(&fs, "fs.nr_open").status, Status::Unknown);
        assert_eq!(find(&fs, "fs.nr_open").current, "unreadable");
        assert!(!passes(&fs));
        facts.nr_open = Some(2_000_000);
        facts.nf_conntrack_max = None;
        assert!(passes(&check(&facts, 1_000_000)));
    }

    #[test]
    fn tw_recycle_on_fails() {
        let mut facts = check_ready(1_000);
        facts.tcp_tw_recycle = Some(1);
        let fs = check(&facts, 1_000);
        let tw = find(&fs, "net.ipv4.tcp_tw_recycle");
        assert_eq!(tw.status, Status::Short);
        assert_eq!(
            tw.fix,
            ["/etc/sysctl.d/60-millgate.conf: net.ipv4.tcp_tw_recycle = 0"]
        );
        facts.tcp_tw_recycle = Some(0);
        assert!(passes(&check(&facts, 1_000)));
    }

    /// Facts that pass for `n`, built from the advice itself.
    fn check_ready(n: u64) -> Facts {
        let big = (n + SYSTEM_RESERVE) * 4;
        Facts {
            file_max: Some(big),
            nr_open: Some(big),
            nofile_soft: Some(big),
            nofile_hard: Some(u64::MAX),
            somaxconn: Some(65_535),
            tcp_max_syn_backlog: Some(65_535),
            tcp_mem: Some([big, big, big]),
            nf_conntrack_max: Some(big),
            tcp_max_tw_buckets: Some(big),
            tcp_max_orphans: Some(big),
            ..stock()
        }
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_u64("2466170\n"), Some(2_466_170));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_pair("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_pair("1 2 3"), None);
        assert_eq!(
            parse_triple("287898\t383867\t575796\n"),
            Some([287_898, 383_867, 575_796])
        );
        assert_eq!(parse_triple("1 2"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             96365                96365                processes \n\
                      Max open files            20000                unlimited            files     \n";
        assert_eq!(parse_nofile(limits), (Some(20_000), Some(u64::MAX)));
        assert_eq!(parse_nofile("Max processes 1 1"), (None, None));
        assert_eq!(
            parse_mem_total("MemTotal:       24684200 kB\nMemFree: 1 kB\n"),
            Some(24_684_200 * 1024)
        );
    }

    #[test]
    fn gather_maps_paths_to_fields() {
        let fake = |path: &str| -> Option<String> {
            Some(
                match path {
                    "/proc/sys/fs/file-max" => "100\n",
                    "/proc/sys/fs/nr_open" => "200\n",
                    "/proc/sys/net/core/somaxconn" => "300\n",
                    "/proc/sys/net/ipv4/tcp_mem" => "1 2 3\n",
                    "/proc/sys/net/ipv4/ip_local_port_range" => "1024 65535\n",
                    "/proc/self/limits" => "Max open files 7 8 files\n",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let facts = gather(fake);
        assert_eq!(facts.file_max, Some(100));
        assert_eq!(facts.nr_open, Some(200));
        assert_eq!(facts.somaxconn, Some(300));
        assert_eq!(facts.tcp_mem, Some([1, 2, 3]));
        assert_eq!(facts.ip_local_port_range, Some((1_024, 65_535)));
        assert_eq!((facts.nofile_soft, facts.nofile_hard), (Some(7), Some(8)));
        assert_eq!(facts.nf_conntrack_max, None);
        assert_eq!(facts.tcp_tw_recycle, None);
    }

    #[test]
    fn report_prints_every_finding_and_the_verdict() {
        let fs = check(&stock(), 1_000_000);
        let mut out = Vec::new();
        let ok = report(&fs, 1_000_000, &mut out).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!ok);
        for f in &fs {
            assert!(text.contains(f.setting), "{} missing", f.setting);
        }
        assert!(text.contains("[  SHORT] RLIMIT_NOFILE (soft): current 20000, need >= 1001024"));
        assert!(text.contains("[     ok] fs.nr_open: current 1048576, need >= 1001024"));
        assert!(text.contains("verdict: 7 setting(s) short"));
    }
}
