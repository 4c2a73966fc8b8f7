//! `loadgen` against real `gateway` processes on loopback: a few hundred
//! sessions over several workers and source addresses, a bad secret, and a
//! drain (storm) with two gateways on one port.
//!
//! The gateway binary is another package's, so it is found next to this
//! test's own target directory (`target/<profile>/gateway`); `cargo test
//! --workspace` builds it first. A missing binary fails the test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use loadgen::report::Report;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

fn gateway_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/gateway
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join("gateway");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace binaries first (cargo test --workspace does)",
        bin.display()
    );
    bin
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A gateway process, killed when dropped.
struct Gateway {
    child: Child,
    /// The address it bound (every gateway binds with SO_REUSEPORT, so a
    /// second one may join it).
    addr: SocketAddr,
}

impl Gateway {
    /// Starts a gateway on `listen` (port 0: the kernel picks) and returns
    /// once it says where it is listening.
    fn start(listen: &str, secret: &Path, extra: &[&str]) -> Gateway {
        let mut child = Command::new(gateway_bin())
            .args(["--listen", listen, "--threads", "1"])
            .arg("--secret-file")
            .arg(secret)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let first = lines.next().expect("gateway said nothing").unwrap();
        // "gateway listening on ADDR[ metrics on ADDR]"
        let addr = first
            .strip_prefix("gateway listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("gateway said {first:?}"))
            .parse()
            .expect("a listen address");
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Gateway { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadgen(mode: &str, args: &[String], json: &Path) -> Report {
    let out = Command::new(LOADGEN)
        .arg(mode)
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--quiet")
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(json).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn idle_sessions_over_workers_and_sources_all_log_in_and_heartbeat() {
    let dir = scratch("idle");
    let secret = dir.join("secret");
    std::fs::write(&secret, "it secret\n").unwrap();
    let gw = Gateway::start("127.0.0.1:0", &secret, &[]);
    let mut args = s(&[
        "--addr",
        &gw.addr.to_string(),
        "--sessions",
        "300",
        "--workers",
        "3",
        "--per-source",
        "70",
        "--hold-s",
        "2",
        "--warmup-s",
        "1",
        "--heartbeat-ms",
        "200",
        "--gateway-pid",
        &gw.pid().to_string(),
    ]);
    args.push("--secret-file".into());
    args.push(secret.display().to_string());
    let r = loadgen("idle", &args, &dir.join("r.json"));
    assert_eq!(
        (r.logged_in, r.failed, r.lost),
        (300, 0, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.held_at_end, 300);
    assert_eq!(r.workers, 3);
    assert_eq!(r.source_addresses, 5);
    assert_eq!(r.login_us.count, 300);
    assert!(r.heartbeats_acked >= 300, "{}", r.table());
    assert!(r.hb_window_acked > 0);
    assert!(r.gateway_rss_before_kib.is_some() && r.gateway_bytes_per_session.is_some());
    assert!(r.gateway_cpu_us_in_window.is_some());
    assert!(r.heartbeat_rtt_us.count > 0 && r.heartbeat_rtt_us.p50 <= r.heartbeat_rtt_us.max);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wrong_secret_fails_every_login_as_unauthenticated() {
    let dir = scratch("badsecret");
    let good = dir.join("good");
    let bad = dir.join("bad");
    std::fs::write(&good, "right").unwrap();
    std::fs::write(&bad, "wrong").unwrap();
    let gw = Gateway::start("127.0.0.1:0", &good, &[]);
    let mut args = s(&[
        "--addr",
        &gw.addr.to_string(),
        "--sessions",
        "50",
        "--hold-s",
        "0",
    ]);
    args.push("--secret-file".into());
    args.push(bad.display().to_string());
    let r = loadgen("idle", &args, &dir.join("r.json"));
    assert_eq!(r.logged_in, 0);
    assert_eq!(
        r.failed_by_reason.get("error UNAUTHENTICATED"),
        Some(&50),
        "{}",
        r.table()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn storm_brings_every_drained_session_back_on_the_other_gateway() {
    let dir = scratch("storm");
    let secret = dir.join("secret");
    std::fs::write(&secret, "storm").unwrap();
    // The second gateway joins the port the first one got (SO_REUSEPORT):
    // the port is held by a live process all along.
    let a = Gateway::start("127.0.0.1:0", &secret, &["--drain-ms", "500"]);
    let b = Gateway::start(&a.addr.to_string(), &secret, &["--drain-ms", "500"]);
    assert_eq!(b.addr, a.addr);
    let mut args = s(&[
        "--addr",
        &a.addr.to_string(),
        "--sessions",
        "200",
        "--hold-s",
        "1",
        "--storm-timeout-s",
        "20",
        "--drain-pid",
        &a.pid().to_string(),
    ]);
    args.push("--secret-file".into());
    args.push(secret.display().to_string());
    let r = loadgen("storm", &args, &dir.join("r.json"));
    let storm = r.storm.clone().expect("storm section");
    assert!(storm.complete, "{}", r.table());
    assert!(
        storm.goaways > 0,
        "SO_REUSEPORT gave the drained gateway no session: {}",
        r.table()
    );
    assert_eq!(storm.relogins, storm.goaways);
    assert_eq!(storm.up_after, 200);
    assert_eq!(storm.goaway_after_ms.count, storm.goaways);
    assert!(
        storm.goaway_after_ms.max <= 500,
        "delays within the drain window"
    );
    // Nobody came back before the delay the gateway asked for.
    assert!(storm.relogin_ms.max >= storm.goaway_after_ms.max);
    assert_eq!(r.lost, 0, "{}", r.table());
    std::fs::remove_dir_all(&dir).unwrap();
}
