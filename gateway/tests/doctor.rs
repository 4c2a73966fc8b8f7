//! `gateway doctor`: the arithmetic and advice from fake `/proc` values
//! (sans-io), and one run against this machine's real settings.

use gateway::doctor::{Facts, Finding, Status, check, gather, passes};

/// Every setting the doctor must name, as `tuning/README.md` lists them.
const SETTINGS: &[&str] = &[
    "fs.file-max",
    "fs.nr_open",
    "RLIMIT_NOFILE (soft)",
    "RLIMIT_NOFILE (hard)",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.netdev_max_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.netfilter.nf_conntrack_max",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_recycle",
];

/// A fake `/proc`: a small box with stock-looking values.
fn fake_proc(path: &str) -> Option<String> {
    let text = match path {
        "/proc/sys/fs/file-max" => "800000\n",
        "/proc/sys/fs/nr_open" => "1048576\n",
        "/proc/sys/net/core/somaxconn" => "4096\n",
        "/proc/sys/net/ipv4/tcp_max_syn_backlog" => "1024\n",
        "/proc/sys/net/ipv4/tcp_syncookies" => "0\n",
        "/proc/sys/net/core/netdev_max_backlog" => "1000\n",
        "/proc/sys/net/ipv4/ip_local_port_range" => "32768\t60999\n",
        "/proc/sys/net/ipv4/tcp_mem" => "94000\t125000\t188000\n",
        "/proc/sys/net/ipv4/tcp_rmem" => "4096\t131072\t6291456\n",
        "/proc/sys/net/ipv4/tcp_wmem" => "4096\t16384\t4194304\n",
        "/proc/sys/net/ipv4/tcp_max_tw_buckets" => "65536\n",
        "/proc/sys/net/ipv4/tcp_max_orphans" => "65536\n",
        "/proc/sys/net/ipv4/tcp_fin_timeout" => "60\n",
        "/proc/self/limits" => concat!(
            "Limit                     Soft Limit           Hard Limit           Units     \n",
            "Max open files            1024                 524288               files     \n",
        ),
        "/proc/meminfo" => "MemTotal:        8000000 kB\n",
        _ => return None,
    };
    Some(text.to_owned())
}

fn find<'a>(findings: &'a [Finding], setting: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.setting == setting)
        .unwrap_or_else(|| panic!("no finding for {setting}"))
}

#[test]
fn fake_proc_reads_into_facts() {
    let facts = gather(fake_proc);
    assert_eq!(facts.file_max, Some(800_000));
    assert_eq!(facts.nofile_soft, Some(1_024));
    assert_eq!(facts.nofile_hard, Some(524_288));
    assert_eq!(facts.tcp_mem, Some([94_000, 125_000, 188_000]));
    assert_eq!(facts.ip_local_port_range, Some((32_768, 60_999)));
    assert_eq!(facts.mem_total, Some(8_000_000 * 1024));
    // Absent files: conntrack not loaded, tw_recycle removed from the kernel.
    assert_eq!(facts.nf_conntrack_max, None);
    assert_eq!(facts.tcp_tw_recycle, None);
}

#[test]
fn arithmetic_for_a_million_sessions() {
    let findings = check(&gather(fake_proc), 1_000_000);
    let short: Vec<_> = findings
        .iter()
        .filter(|f| f.status == Status::Short)
        .map(|f| f.setting)
        .collect();
    assert_eq!(
        short,
        [
            "fs.file-max",
            "RLIMIT_NOFILE (soft)",
            "RLIMIT_NOFILE (hard)",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.tcp_mem",
            "net.ipv4.tcp_max_tw_buckets",
            "net.ipv4.tcp_max_orphans",
        ]
    );
    assert!(!passes(&findings));

    // 1M sessions + 65,536 for the rest of the box.
    let file_max = find(&findings, "fs.file-max");
    assert_eq!(file_max.current, "800000");
    assert_eq!(file_max.required, ">= 1065536");
    assert_eq!(
        file_max.fix,
        ["/etc/sysctl.d/60-millgate.conf: fs.file-max = 1065536"]
    );
    // 1M sessions + 1,024 reserved fds, in all three places it can be set.
    assert_eq!(
        find(&findings, "RLIMIT_NOFILE (hard)").fix,
        [
            "/etc/security/limits.d/millgate.conf: millgate soft nofile 1001024",
            "/etc/security/limits.d/millgate.conf: millgate hard nofile 1001024",
            "systemd unit [Service]: LimitNOFILE=1001024",
        ]
    );
    assert_eq!(find(&findings, "fs.nr_open").status, Status::Ok);
    // Backlogs are capped at 65,535.
    assert_eq!(
        find(&findings, "net.core.somaxconn").fix,
        ["/etc/sysctl.d/60-millgate.conf: net.core.somaxconn = 65535"]
    );
    // tcp_mem: 2 pages per session at pressure, low and high at 3/4 and 3/2.
    assert_eq!(
        find(&findings, "net.ipv4.tcp_mem").fix,
        ["/etc/sysctl.d/60-millgate.conf: net.ipv4.tcp_mem = 1500000 2000000 3000000"]
    );
    // TIME_WAIT and orphans: one per session closed by a drain.
    assert_eq!(
        find(&findings, "net.ipv4.tcp_max_tw_buckets").required,
        ">= 1000000"
    );
    // A load generator here needs ceil(1M / 28,232) = 36 source addresses.
    assert_eq!(
        find(&findings, "net.ipv4.ip_local_port_range").required,
        "a load generator here needs 36 source addresses per destination"
    );
    // Not functions of N: reported, never failing.
    for info in [
        "net.core.netdev_max_backlog",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "net.ipv4.tcp_fin_timeout",
    ] {
        assert_eq!(find(&findings, info).status, Status::Info, "{info}");
    }
    assert_eq!(
        find(&findings, "net.netfilter.nf_conntrack_max").status,
        Status::Ok
    );
}

#[test]
fn fixed_box_passes_and_advises_nothing() {
    let mut facts: Facts = gather(fake_proc);
    let n = 1_000_000;
    facts.file_max = Some(1_065_536);
    facts.nofile_soft = Some(1_001_024);
    facts.nofile_hard = Some(1_001_024);
    facts.somaxconn = Some(65_535);
    facts.tcp_max_syn_backlog = Some(65_535);
    facts.tcp_mem = Some([1_500_000, 2_000_000, 3_000_000]);
    facts.tcp_max_tw_buckets = Some(n);
    facts.tcp_max_orphans = Some(n);
    let findings = check(&facts, n);
    assert!(passes(&findings), "{findings:#?}");
    assert!(findings.iter().all(|f| f.fix.is_empty()));

    // One less than needed anywhere is short again.
    facts.nofile_soft = Some(1_001_023);
    assert!(!passes(&check(&facts, n)));
}

#[test]
fn conntrack_loaded_is_sized() {
    let mut facts = gather(fake_proc);
    facts.nf_conntrack_max = Some(262_144);
    let findings = check(&facts, 1_000_000);
    let ct = find(&findings, "net.netfilter.nf_conntrack_max");
    assert_eq!(ct.status, Status::Short);
    assert_eq!(ct.required, ">= 1065536");
}

/// Runs `gateway doctor --sessions n` on this machine; returns whether it
/// exited 0, and what it printed.
fn doctor(n: u64) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["doctor", "--sessions", &n.to_string()])
        .output()
        .expect("run gateway doctor");
    let text = String::from_utf8(out.stdout).expect("doctor prints UTF-8");
    (out.status.success(), text)
}

/// The first line of `text` about `setting`.
fn line<'a>(text: &'a str, setting: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(&format!("] {setting}: current ")))
        .unwrap_or_else(|| panic!("{setting} missing from:\n{text}"))
}

/// Checks one live run: every setting named, and the exit code, the
/// verdict and the SHORT/UNKNOWN lines telling the same story.
fn consistent(n: u64, ok: bool, text: &str) {
    for setting in SETTINGS {
        line(text, setting);
    }
    let failing = text
        .lines()
        .filter(|l| l.starts_with("[  SHORT]") || l.starts_with("[UNKNOWN]"))
        .count();
    let verdict = text.lines().last().expect("a verdict line");
    if ok {
        assert_eq!(failing, 0, "exit 0 with failing lines:\n{text}");
        assert_eq!(verdict, format!("verdict: ready for {n} sessions"));
    } else {
        assert!(failing > 0, "exit 1 with nothing short:\n{text}");
        assert!(
            verdict.starts_with(&format!(
                "verdict: {failing} setting(s) short for {n} sessions"
            )),
            "{verdict}"
        );
    }
}

#[test]
fn live_run_reads_this_process_limit_and_exits_by_its_verdict() {
    use gateway::doctor::FD_RESERVE;
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    // The child inherits this process's limits; getrlimit(2) reads them
    // without the /proc/self/limits text the doctor parses. Soft and hard
    // are made to differ (lowering the soft limit needs no privilege), so
    // that reading one for the other shows.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft == hard && hard != RLIM_INFINITY && hard > FD_RESERVE + 1 {
        setrlimit(Resource::RLIMIT_NOFILE, hard - 1, hard).expect("lower the soft limit");
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let show = |v: u64| {
        if v == RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    let file_max = std::fs::read_to_string("/proc/sys/fs/file-max").expect("fs.file-max");

    let (ok, text) = doctor(1_000_000);
    consistent(1_000_000, ok, &text);
    assert!(
        line(&text, "RLIMIT_NOFILE (hard)")
            .ends_with(&format!("current {}, need >= 1001024", show(hard))),
        "{text}"
    );
    assert!(
        line(&text, "fs.file-max").contains(&format!("current {}, ", file_max.trim())),
        "{text}"
    );
    if soft == RLIM_INFINITY {
        assert!(line(&text, "RLIMIT_NOFILE (soft)").starts_with("[     ok]"));
        return;
    }
    // The soft limit exactly met: ok. One session more: short, with a fix
    // line, so the whole run fails and says so in its exit code.
    if let Some(fits) = soft.checked_sub(FD_RESERVE) {
        let (ok, text) = doctor(fits);
        consistent(fits, ok, &text);
        assert_eq!(
            line(&text, "RLIMIT_NOFILE (soft)"),
            format!("[     ok] RLIMIT_NOFILE (soft): current {soft}, need >= {soft}")
        );
    }
    let over = soft.saturating_sub(FD_RESERVE) + 1;
    let (ok, text) = doctor(over);
    consistent(over, ok, &text);
    assert!(!ok, "short of RLIMIT_NOFILE yet exit 0:\n{text}");
    let need = over + FD_RESERVE;
    assert_eq!(
        line(&text, "RLIMIT_NOFILE (soft)"),
        format!("[  SHORT] RLIMIT_NOFILE (soft): current {soft}, need >= {need}")
    );
    assert!(
        text.contains(&format!(
            "fix: /etc/security/limits.d/millgate.conf: millgate soft nofile {need}"
        )),
        "{text}"
    );
}
