//! The adapter against rustls' own client, in memory: bytes are moved by
//! hand, no socket.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::*;

mod pair;

/// The server's config and a client trusting its certificate.
fn pair(alpn: &[&[u8]]) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (certs, key, client) = pair::cert_and_client(alpn);
    (config_from(certs, key).unwrap(), client)
}

fn pump(c: &mut ClientConnection, s: &mut Tls, plain: &mut BytesMut, chunk: usize) {
    let read = |i: &mut BytesMut, p: &mut BytesMut, o: &mut BytesMut| {
        s.read(i, p, o).unwrap();
    };
    pair::pump(c, read, plain, chunk);
}

fn client_plaintext(c: &mut ClientConnection) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.reader(), &mut got);
    got
}

#[test]
fn a_handshake_then_frames_both_ways_in_any_cut() {
    for chunk in [1, 7, 4096] {
        let (server, client) = pair(&[ALPN]);
        let mut c =
            ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut s = Tls::new(server).unwrap();
        let mut plain = BytesMut::new();
        std::io::Write::write_all(&mut c.writer(), b"LOGIN frame bytes").unwrap();
        pump(&mut c, &mut s, &mut plain, chunk);
        assert!(!s.is_handshaking());
        assert_eq!(c.alpn_protocol(), Some(ALPN), "millgate/1 selected");
        assert_eq!(&plain[..], b"LOGIN frame bytes");

        let mut out = BytesMut::new();
        s.write(b"LOGIN_ACK", &mut out).unwrap();
        s.write(b" and more", &mut out).unwrap();
        let mut rd = &out[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
        assert_eq!(client_plaintext(&mut c), b"LOGIN_ACK and more");
    }
}

#[test]
fn a_client_offering_no_alpn_is_accepted() {
    let (server, client) = pair(&[]);
    let mut c = ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = Tls::new(server).unwrap();
    let mut plain = BytesMut::new();
    std::io::Write::write_all(&mut c.writer(), b"x").unwrap();
    pump(&mut c, &mut s, &mut plain, 4096);
    assert_eq!((&plain[..], c.alpn_protocol()), (&b"x"[..], None));
}

#[test]
fn close_notify_from_the_client_is_seen_and_plaintext_before_the_handshake_is_refused() {
    let (server, client) = pair(&[ALPN]);
    let mut s = Tls::new(server).unwrap();
    assert!(matches!(
        s.write(b"early", &mut BytesMut::new()),
        Err(TlsError::NotReady)
    ));
    let mut c = ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut plain = BytesMut::new();
    pump(&mut c, &mut s, &mut plain, 4096);
    c.send_close_notify();
    let mut to_server = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut to_server).unwrap();
    }
    let mut incoming = BytesMut::from(&to_server[..]);
    let status = s
        .read(&mut incoming, &mut plain, &mut BytesMut::new())
        .unwrap();
    assert_eq!(status, Status::PeerClosed);
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_an_error() {
    let (server, _) = pair(&[ALPN]);
    let mut s = Tls::new(server).unwrap();
    let mut incoming = BytesMut::new();
    proto::encode(
        &mut incoming,
        proto::Kind::Login,
        1,
        &proto::pb::Login::default(),
    );
    let r = s.read(&mut incoming, &mut BytesMut::new(), &mut BytesMut::new());
    assert!(matches!(r, Err(TlsError::Rustls(_))), "{r:?}");
}

#[test]
fn pem_files_load_and_a_file_without_a_certificate_is_refused_by_name() {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("millgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    assert!(server_config(&cert_path, &key_path).is_ok());
    let e = server_config(&key_path, &key_path).unwrap_err();
    assert!(e.to_string().contains("key.pem"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
