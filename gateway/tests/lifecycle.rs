//! The gateway at scale and across its lifecycle: thousands of concurrent
//! sessions over two workers, SIGTERM drain, SIGINT stop, metrics, and the
//! `token` subcommand.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use proto::pb::{self, NetworkType};
use proto::{Kind, TokenKey};
use support::{Client, Gateway, login_msg};

/// Opens `n` sessions, pipelining the logins: all LOGINs are written
/// before any ack is read.
fn open_sessions(gw: &Gateway, n: usize, first_uin: u64) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n).map(|_| Client::connect(gw.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(
            Kind::Login,
            1,
            &login_msg(first_uin + i as u64, 1, NetworkType::Wifi),
        );
    }
    for c in &mut clients {
        let _: pb::LoginAck = c.expect(Kind::LoginAck, 1);
    }
    clients
}

#[test]
fn five_thousand_concurrent_sessions_across_two_threads() {
    let gw = Gateway::start(&["--threads", "2", "--metrics", "127.0.0.1:0"]);
    let mut clients = open_sessions(&gw, 5_000, 1);
    assert_eq!(gw.metric("millgate_sessions_open"), 5_000);
    for c in &mut clients {
        c.send(Kind::Heartbeat, 2, &pb::Heartbeat {});
    }
    for c in &mut clients {
        let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, 2);
    }
    assert_eq!(gw.metric("millgate_heartbeats_total"), 5_000);
    assert_eq!(gw.metric("millgate_logins_ok_total"), 5_000);
    // Both workers took a share: SO_REUSEPORT spreads accepts by a hash of
    // the 4-tuple, so each of the two should hold about half. A fifth is
    // far outside chance (binomial, 5,000 draws: 35 sessions is one
    // standard deviation) yet fails if one worker takes nearly everything.
    let shares: Vec<u64> = (0..2)
        .map(|w| gw.metric(&format!("millgate_worker_sessions_open{{worker=\"{w}\"}}")))
        .collect();
    assert_eq!(shares.iter().sum::<u64>(), 5_000, "{shares:?}");
    assert!(shares.iter().all(|&n| n >= 1_000), "{shares:?}");
    drop(clients);
}

#[test]
fn sigterm_drain_sends_goaway_to_every_session_then_exits_zero() {
    let mut gw = Gateway::start(&["--threads", "2", "--drain-ms", "1000"]);
    let n = 200;
    let mut clients = open_sessions(&gw, n, 1_000);
    gw.signal(Signal::SIGTERM);
    let mut delays = Vec::with_capacity(n);
    for c in &mut clients {
        let g: pb::GoAway = c.expect(Kind::GoAway, 0);
        assert!(g.reconnect_after_ms < 1_000, "{g:?}");
        delays.push(g.reconnect_after_ms);
        c.expect_closed();
    }
    // Spread over the window, not all at once.
    delays.sort_unstable();
    delays.dedup();
    assert!(delays.len() > n / 2, "{} distinct delays", delays.len());
    assert!(*delays.last().unwrap() >= 800);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    // Not accepting any more.
    assert!(TcpStream::connect(gw.addr).is_err());
}

#[test]
fn sigint_stops_at_once() {
    let mut gw = Gateway::start(&["--threads", "2", "--drain-ms", "60000"]);
    let mut clients = open_sessions(&gw, 10, 1);
    gw.signal(Signal::SIGINT);
    for c in &mut clients {
        c.expect_closed(); // no GOAWAY
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn metrics_count_failures_and_closes_by_reason() {
    let gw = Gateway::start(&["--threads", "1", "--metrics", "127.0.0.1:0"]);
    let mut c = Client::connect(gw.addr);
    let mut bad = login_msg(1, 1, NetworkType::Wifi);
    bad.device_id = 2;
    c.send(Kind::Login, 1, &bad);
    c.expect_error(1);
    c.expect_closed();
    let mut c = Client::connect(gw.addr);
    c.login(2, 1, NetworkType::Wifi);
    drop(c);
    // The EOF is processed asynchronously: wait for the gauge to drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.metric("millgate_sessions_open") != 0 {
        assert!(std::time::Instant::now() < deadline, "session never closed");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
    let mut s = TcpStream::connect(gw.metrics.unwrap()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"));
    assert!(
        text.contains("millgate_logins_failed_total{reason=\"bad_token\"} 1"),
        "{text}"
    );
    assert!(text.contains("millgate_closes_total{reason=\"unauthenticated\"} 1"));
    assert!(text.contains("millgate_closes_total{reason=\"client_eof\"} 1"));
    assert!(text.contains("millgate_logins_ok_total 1"));
}

#[test]
fn token_subcommand_mints_a_verifiable_token() {
    let dir = support::TempDir::new("tok");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, b"s3cret\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "token",
            "--uin",
            "77",
            "--device",
            "3",
            "--ttl-secs",
            "100",
            "--secret-file",
        ])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hex_token = String::from_utf8(out.stdout).unwrap();
    let token = hex::decode(hex_token.trim()).unwrap();
    let now = support::unix_now();
    let key = TokenKey::new(b"s3cret");
    key.verify(&token, 77, 3, now).unwrap();
    assert!(key.verify(&token, 77, 3, now + 101).is_err());
}

#[test]
fn refuses_to_start_without_a_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret"));
}
