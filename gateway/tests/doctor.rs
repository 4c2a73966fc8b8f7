//! `gateway doctor`: the arithmetic and advice from fake `/proc` values
//! (sans-io), and one run against this machine's real settings.

use gateway::doctor::{Facts, Finding, Status, check, gather, passes, run_live};

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

#[test]
fn live_run_names_every_setting_and_agrees_with_findings() {
    let sessions = 1_000_000;
    let mut out = Vec::new();
    let ok = run_live(sessions, &mut out).expect("write to a Vec");
    let text = String::from_utf8(out).expect("doctor prints UTF-8");
    for setting in SETTINGS {
        assert!(
            text.contains(&format!("] {setting}: current ")),
            "{setting} missing from:\n{text}"
        );
    }
    let findings = check(&gather(|p| std::fs::read_to_string(p).ok()), sessions);
    assert_eq!(ok, passes(&findings), "{text}");
    let short = findings.iter().filter(|f| f.fails()).count();
    let verdict = text.lines().last().expect("a verdict line");
    if ok {
        assert_eq!(verdict, format!("verdict: ready for {sessions} sessions"));
    } else {
        assert!(
            verdict.starts_with(&format!("verdict: {short} setting(s) short")),
            "{verdict}"
        );
        // Every short setting comes with a line to add.
        assert!(
            findings
                .iter()
                .filter(|f| f.fails())
                .all(|f| { f.status == Status::Unknown || !f.fix.is_empty() })
        );
    }
}
