//! The WebSocket opening handshake (RFC 6455 section 4), sans-io: the
//! client's HTTP/1.1 request parsed with httparse, checked, and answered
//! with `101 Switching Protocols` or an HTTP error, each response written
//! in full by [`Handshake`].
//!
//! Answers: a request that is not an upgrade, or asks for another
//! WebSocket version, `426 Upgrade Required` (with `Sec-WebSocket-Version:
//! 13`); another path `404`; an Origin not on the allow-list `403`; a
//! method other than GET, a malformed request or a bad key `400`; a head
//! over [`MAX_HEAD`] bytes `431`. Every refusal closes the connection.
//! The subprotocol `millgate.v1` is selected when the client offers it; a
//! client that offers none is accepted without one (PROTOCOL.md).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The longest request head accepted (bytes).
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;
/// RFC 6455's GUID, appended to the key for the accept hash.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The subprotocol of PROTOCOL.md.
pub const SUBPROTOCOL: &str = "millgate.v1";

/// What the handshake checks against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// The path upgrades are accepted on (default `/ws`).
    pub path: String,
    /// Allowed `Origin` values; empty allows any (and none).
    pub origins: Vec<String>,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            path: "/ws".into(),
            origins: Vec::new(),
        }
    }
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed HTTP request")]
    Malformed,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("method is not GET")]
    Method,
    #[error("not a WebSocket upgrade")]
    NotUpgrade,
    #[error("unsupported WebSocket version")]
    Version,
    #[error("missing or bad Sec-WebSocket-Key")]
    Key,
    #[error("path not found")]
    Path,
    #[error("origin not allowed")]
    Origin,
}

impl Refusal {
    fn status(self) -> &'static str {
        match self {
            Refusal::Malformed | Refusal::Method | Refusal::Key => "400 Bad Request",
            Refusal::HeadTooLarge => "431 Request Header Fields Too Large",
            Refusal::NotUpgrade | Refusal::Version => "426 Upgrade Required",
            Refusal::Path => "404 Not Found",
            Refusal::Origin => "403 Forbidden",
        }
    }
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `101` response to write.
    pub response: Vec<u8>,
    /// Bytes of the input the request took; what follows are frames.
    pub consumed: usize,
}

/// The outcome of [`Handshake::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The head is not complete yet: read more.
    Partial,
    Accepted(Accepted),
    /// Write `response`, then close.
    Refused {
        refusal: Refusal,
        response: Vec<u8>,
    },
}

impl Handshake {
    /// Parses the request at the front of `input` and decides.
    pub fn parse(input: &[u8], cfg: &HandshakeConfig) -> Handshake {
        match check(input, cfg) {
            Ok(Some(a)) => Handshake::Accepted(a),
            Ok(None) if input.len() > MAX_HEAD => refused(Refusal::HeadTooLarge),
            Ok(None) => Handshake::Partial,
            Err(r) => refused(r),
        }
    }
}

fn refused(refusal: Refusal) -> Handshake {
    let mut response = format!(
        "HTTP/1.1 {}\r\nConnection: close\r\nContent-Length: 0\r\n",
        refusal.status()
    );
    if matches!(refusal, Refusal::NotUpgrade | Refusal::Version) {
        response.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    response.push_str("\r\n");
    Handshake::Refused {
        refusal,
        response: response.into_bytes(),
    }
}

/// The accept key for `key` (RFC 6455 4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

fn has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn check(input: &[u8], cfg: &HandshakeConfig) -> Result<Option<Accepted>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(&input[..input.len().min(MAX_HEAD)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if req.method != Some("GET") {
        return Err(Refusal::Method);
    }
    if req.version != Some(1) {
        return Err(Refusal::Malformed);
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade = header("upgrade").is_some_and(|v| has_token(v, "websocket"));
    let connection = header("connection").is_some_and(|v| has_token(v, "upgrade"));
    if !upgrade || !connection {
        return Err(Refusal::NotUpgrade);
    }
    if header("sec-websocket-version") != Some(b"13") {
        return Err(Refusal::Version);
    }
    let key = header("sec-websocket-key")
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::trim)
        .filter(|k| STANDARD.decode(k).is_ok_and(|raw| raw.len() == 16))
        .ok_or(Refusal::Key)?;
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != cfg.path {
        return Err(Refusal::Path);
    }
    if !cfg.origins.is_empty() {
        let origin = header("origin").and_then(|o| std::str::from_utf8(o).ok());
        if !origin.is_some_and(|o| cfg.origins.iter().any(|a| a == o)) {
            return Err(Refusal::Origin);
        }
    }
    let proto = header("sec-websocket-protocol").is_some_and(|v| has_token(v, SUBPROTOCOL));
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if proto {
        response.push_str("Sec-WebSocket-Protocol: millgate.v1\r\n");
    }
    response.push_str("\r\n");
    Ok(Some(Accepted {
        response: response.into_bytes(),
        consumed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn refusal(input: &str, cfg: &HandshakeConfig) -> (Refusal, String) {
        match Handshake::parse(input.as_bytes(), cfg) {
            Handshake::Refused { refusal, response } => {
                (refusal, String::from_utf8(response).unwrap())
            }
            other => panic!("accepted or partial: {other:?}"),
        }
    }

    #[test]
    fn the_rfc_sample_key_gives_the_rfc_accept() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn an_upgrade_is_accepted_with_the_subprotocol_only_when_offered() {
        let cfg = HandshakeConfig::default();
        let mut input =
            request("/ws", "Sec-WebSocket-Protocol: chat, millgate.v1\r\n").into_bytes();
        let head = input.len();
        input.extend([0x82, 0x80, 0, 0, 0, 0]);
        let Handshake::Accepted(a) = Handshake::parse(&input, &cfg) else {
            panic!("refused");
        };
        assert_eq!(a.consumed, head, "the frame after the head is left");
        let text = String::from_utf8(a.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: millgate.v1\r\n"));
        let Handshake::Accepted(a) = Handshake::parse(request("/ws?x=1", "").as_bytes(), &cfg)
        else {
            panic!("refused");
        };
        assert!(
            !String::from_utf8(a.response)
                .unwrap()
                .contains("Sec-WebSocket-Protocol")
        );
    }

    #[test]
    fn a_head_arriving_in_pieces_is_partial_until_whole() {
        let cfg = HandshakeConfig::default();
        let req = request("/ws", "");
        for cut in [0, 1, 10, req.len() - 1] {
            assert_eq!(
                Handshake::parse(&req.as_bytes()[..cut], &cfg),
                Handshake::Partial
            );
        }
        assert!(matches!(
            Handshake::parse(req.as_bytes(), &cfg),
            Handshake::Accepted(_)
        ));
    }

    #[test]
    fn each_bad_request_gets_its_status_and_closes() {
        let cfg = HandshakeConfig {
            path: "/ws".into(),
            origins: vec!["https://app.example".into()],
        };
        let ok_origin = "Origin: https://app.example\r\n";
        let plain = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        let cases = [
            (plain.to_owned(), Refusal::NotUpgrade, "426"),
            (
                request("/ws", ok_origin).replace("13\r\n", "8\r\n"),
                Refusal::Version,
                "426",
            ),
            (request("/chat", ok_origin), Refusal::Path, "404"),
            (
                request("/ws", "Origin: https://evil.example\r\n"),
                Refusal::Origin,
                "403",
            ),
            (request("/ws", ""), Refusal::Origin, "403"),
            (
                request("/ws", ok_origin).replace("GET", "POST"),
                Refusal::Method,
                "400",
            ),
            (
                request("/ws", ok_origin).replace(KEY, "c2hvcnQ="),
                Refusal::Key,
                "400",
            ),
            (
                "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03".to_owned(),
                Refusal::Malformed,
                "400",
            ),
        ];
        for (input, want, status) in cases {
            let (got, response) = refusal(&input, &cfg);
            assert_eq!(got, want, "{input:?}");
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{response}"
            );
            assert!(response.contains("Connection: close\r\n"));
        }
        let (_, response) = refusal(plain, &cfg);
        assert!(response.contains("Sec-WebSocket-Version: 13\r\n"));
        // A head that never ends.
        let endless = format!("GET /ws HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(refusal(&endless, &cfg).0, Refusal::HeadTooLarge);
    }
}
