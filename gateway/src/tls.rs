//! TLS as a byte-stream adapter in front of the session, sans-io, on
//! rustls' unbuffered API (ring provider): TLS records in, plaintext out
//! onto the session's stream; plaintext in, records out.
//!
//! Why the unbuffered API: rustls' buffered `ServerConnection` keeps its
//! own plaintext and TLS buffers per connection (about 7.5 KB per idle
//! connection, measured for issue 15), against a 4,096-byte budget. Here
//! the caller owns every buffer: records are decrypted in place in the
//! caller's input, so between records a connection holds only rustls'
//! connection state (keys and record-layer counters). A partial record
//! waits in the caller's
//! per-connection input, which exists only while something is partial,
//! as for plain TCP.
//!
//! [`server_config`] builds the rustls config from PEM files: ECDSA P-256
//! or RSA keys, TLS 1.3 and 1.2 with AEAD suites (rustls offers no
//! others), ALPN `millgate/1` selected when offered and a client that
//! offers none accepted (PROTOCOL.md, Transports), no early data.

use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

/// The ALPN protocol id of PROTOCOL.md.
pub const ALPN: &[u8] = b"millgate/1";

/// Why a TLS connection ends, or its config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("reading {path}: {source}")]
    Pem {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("application data before the handshake finished")]
    NotReady,
}

/// A server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &Path, source| TlsError::Pem {
        path: path.display().to_string(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e))?;
    config_from(certs, key)
}

/// A server config from DER certificates and key.
pub fn config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    // Session tickets would keep per-connection state alive after close
    // for resumption; a reconnecting client does a full handshake.
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// What [`Tls::read`] found besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// More TLS bytes are needed (a record or handshake flight is partial).
    Open,
    /// The peer sent close_notify: no more plaintext will come.
    PeerClosed,
}

/// One connection's TLS state (see the module doc).
pub struct Tls {
    conn: UnbufferedServerConnection,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Result<Tls, TlsError> {
        Ok(Tls {
            conn: UnbufferedServerConnection::new(config)?,
        })
    }

    /// True until the handshake is complete.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Processes the TLS bytes at the front of `incoming`: what is
    /// consumed is removed from it (a partial record stays), decrypted
    /// application data is appended to `plain`, and handshake records to
    /// send are appended to `out` (the caller writes them).
    pub fn read(
        &mut self,
        incoming: &mut BytesMut,
        plain: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Status, TlsError> {
        let mut status = Status::Open;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut incoming[..]);
            let mut progress = discard > 0;
            match state? {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        let rec = rec?;
                        discard += rec.discard;
                        plain.extend_from_slice(rec.payload);
                    }
                    progress = true;
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    encode_with(out, |buf| e.encode(buf))?;
                    progress = true;
                }
                // `out` is written by the caller after this call; nothing
                // here depends on it having left.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    progress = true;
                }
                ConnectionState::PeerClosed => {
                    status = Status::PeerClosed;
                    progress = true;
                }
                ConnectionState::Closed => status = Status::PeerClosed,
                // Early data is off (`max_early_data_size` 0).
                ConnectionState::ReadEarlyData(_) => {}
                // Waiting for the client, or established with nothing
                // more to read.
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {}
                _ => {}
            }
            incoming.advance(discard);
            if !progress {
                return Ok(status);
            }
        }
    }

    /// Encrypts `plaintext` into records appended to `out`.
    pub fn write(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), TlsError> {
        match self.conn.process_tls_records(&mut []).state? {
            ConnectionState::WriteTraffic(mut w) => {
                encrypt_with(out, |buf| w.encrypt(plaintext, buf))
            }
            _ => Err(TlsError::NotReady),
        }
    }

    /// Appends a close_notify alert to `out` (after the handshake; before
    /// it, closing the socket is all there is).
    pub fn close_notify(&mut self, out: &mut BytesMut) -> Result<(), TlsError> {
        match self.conn.process_tls_records(&mut []).state? {
            ConnectionState::WriteTraffic(mut w) => {
                encrypt_with(out, |buf| w.queue_close_notify(buf))
            }
            _ => Ok(()),
        }
    }
}

/// Runs `f` on spare room at the end of `out` (first `room` bytes), growing
/// the room to what `required` reads off an error for too small a buffer.
fn grow_into<E: std::fmt::Display>(
    out: &mut BytesMut,
    mut room: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
) -> Result<(), TlsError> {
    loop {
        let start = out.len();
        out.resize(start + room, 0);
        let r = f(&mut out[start..]);
        out.truncate(start + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(_) => return Ok(()),
            Err(e) => match required(&e) {
                Some(n) => room = n,
                None => return Err(TlsError::Encrypt(e.to_string())),
            },
        }
    }
}

/// Appends handshake records `f` encodes.
fn encode_with(
    out: &mut BytesMut,
    f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsError> {
    grow_into(out, 2048, f, |e| match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    })
}

/// Appends records `f` encrypts.
fn encrypt_with(
    out: &mut BytesMut,
    f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsError> {
    grow_into(out, 1024, f, |e| match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
