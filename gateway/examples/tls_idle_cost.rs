//! What an idle TLS session costs the gateway in user space: N server-side
//! `Tls` states (rustls' unbuffered API) after a full handshake with
//! rustls' client, in memory, the clients dropped; RSS growth per state.
//!   cargo run --release -p millgate-gateway --example tls_idle_cost -- [N]
use std::sync::Arc;

use bytes::BytesMut;
use gateway::tls::{Tls, config_from};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn handshake(c: &mut ClientConnection, s: &mut Tls) {
    let (mut incoming, mut plain) = (BytesMut::new(), BytesMut::new());
    loop {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        let mut out = BytesMut::new();
        incoming.extend_from_slice(&to_server);
        s.read(&mut incoming, &mut plain, &mut out).unwrap();
        if to_server.is_empty() && out.is_empty() {
            return;
        }
        let mut rd = &out[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("N"));
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let server = config_from(vec![der.clone()], key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
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
