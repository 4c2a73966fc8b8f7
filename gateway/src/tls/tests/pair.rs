//! A TLS peer for the adapter's tests and the `tls_idle_cost` example: a
//! self-signed ECDSA P-256 certificate for "localhost" (rcgen), a rustls
//! client trusting it, and a loop moving bytes between that client and a
//! server side given as its `read` step. Uses no item of the crate, so
//! both can include it.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The server's certificate chain and key, and a client config trusting
/// it, offering `alpn`.
pub fn cert_and_client(
    alpn: &[&[u8]],
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Arc<ClientConfig>,
) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let mut roots = RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (vec![der], key, Arc::new(client))
}

/// Moves bytes both ways until neither side has anything to send. The
/// client's bytes reach `read(incoming, plain, out)` (the server side) cut
/// into pieces of `chunk` bytes, as a socket might cut them.
pub fn pump(
    c: &mut ClientConnection,
    mut read: impl FnMut(&mut BytesMut, &mut BytesMut, &mut BytesMut),
    plain: &mut BytesMut,
    chunk: usize,
) {
    let mut incoming = BytesMut::new();
    loop {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        let mut out = BytesMut::new();
        for piece in to_server.chunks(chunk) {
            incoming.extend_from_slice(piece);
            read(&mut incoming, plain, &mut out);
        }
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
