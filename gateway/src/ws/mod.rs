//! WebSocket (RFC 6455) as a byte-stream adapter in front of the session,
//! sans-io (PROTOCOL.md, Transports): the HTTP/1.1 upgrade
//! ([`handshake`]) and the framing ([`frame`]). The payloads of a
//! connection's binary messages are one byte stream of protocol frames;
//! the session never knows it is behind WebSocket.
//!
//! Why the framing is written here rather than taken from tungstenite:
//! its `WebSocket` keeps an input buffer and an output buffer per
//! connection (a 4 KiB read chunk at least), which alone is 30 times the
//! 128-byte budget of an idle session (issue 15). The decoder here keeps
//! 16 bytes of state between frames and unmasks payload straight into
//! the session's input, so an idle WebSocket connection holds no buffer
//! at all. What a library does well is still a library's: HTTP request
//! parsing is httparse's, the accept key is RustCrypto's SHA-1 and the
//! base64 crate's.

pub mod frame;
pub mod handshake;

pub use frame::{Control, Decoder, WsError};
pub use handshake::{Accepted, Handshake, HandshakeConfig, Refusal};

/// Close codes the gateway sends (RFC 6455 section 7.4.1, as PROTOCOL.md
/// assigns them).
pub mod close {
    /// Idle expiry, a KICK, or the client's own close answered.
    pub const NORMAL: u16 = 1000;
    /// After GOAWAY (the gateway is draining).
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol error (unmasked frame, bad opcode, RSV bits).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// After the ERRORs of rules 1 and 11 (and a text message: BAD_FRAME).
    pub const POLICY: u16 = 1008;
    /// After TOO_LARGE, or a frame announcing more than the max body.
    pub const TOO_BIG: u16 = 1009;
}
