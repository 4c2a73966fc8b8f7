//! What an idle TLS session costs the gateway in user space: N server-side
//! `Tls` states (rustls' unbuffered API) after a full handshake with
//! rustls' client, in memory, the clients dropped; RSS growth per state.
//!   cargo run --release -p millgate-gateway --example tls_idle_cost -- [N]
use bytes::BytesMut;
use gateway::tls::{Tls, config_from};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[path = "../src/tls/tests/pair.rs"]
mod pair;

fn handshake(c: &mut ClientConnection, s: &mut Tls) {
    let read = |i: &mut BytesMut, p: &mut BytesMut, o: &mut BytesMut| {
        s.read(i, p, o).unwrap();
    };
    pair::pump(c, read, &mut BytesMut::new(), usize::MAX);
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("N"));
    let (certs, key, client) = pair::cert_and_client(&[]);
    let server = config_from(certs, key).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    // One handshake first, so one-time allocations are not counted.
    let mut warm = Tls::new(server.clone()).unwrap();
    handshake(
        &mut ClientConnection::new(client.clone(), name.clone()).unwrap(),
        &mut warm,
    );
    let mut held = Vec::with_capacity(n);
    let before = rss_kib();
    for _ in 0..n {
        let mut s = Tls::new(server.clone()).unwrap();
        handshake(
            &mut ClientConnection::new(client.clone(), name.clone()).unwrap(),
            &mut s,
        );
        assert!(!s.is_handshaking());
        held.push(s);
    }
    let after = rss_kib();
    println!(
        "{n} idle TLS states: RSS {before} KiB -> {after} KiB, {:.0} bytes each (size_of Tls {})",
        (after - before) as f64 * 1024.0 / n as f64,
        std::mem::size_of::<Tls>()
    );
}
