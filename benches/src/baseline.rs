//! The baseline: the session part of PROTOCOL.md written the way most Rust
//! services are, to measure the gateway against.
//!
//! One tokio task per connection; frames through tokio-util's
//! `LengthDelimitedCodec` in a `Framed`; login and idle expiry with
//! `tokio::time::timeout` around each read. It is meant to be a competent
//! version of the ordinary design, not a straw man: TCP_NODELAY, a 4,096
//! listen backlog, the token key scheduled once, an ERROR flushed and the
//! socket half-closed and drained before it is dropped so the ERROR is not
//! lost to a reset.
//!
//! What it speaks: LOGIN with the token check (rules 1 and 2), LOGIN_ACK
//! and HEARTBEAT_ACK with a fixed interval (rules 3 and 5; the interval does
//! not adapt, which rule 5 allows), idle expiry at 3 x the interval
//! (rule 4), the ERRORs of rules 1 and 11 followed by a close, and rule 13's
//! answers for SEND, SYNC, JOIN and LEAVE, as a gateway without a logic
//! server gives them. There is no logic tier, so there is no duplicate-login
//! KICK (the gateway leaves that to the logic server too) and no SEND rate
//! limit.
//!
//! The length-delimited codec checks only `body_len` before the body has
//! arrived; version and kind are checked once the frame is whole (the
//! gateway decides all three from the header alone).
//!
//! The codec is set up so that a decoded item is the 8 header bytes after
//! `body_len` followed by the body, and an encoded item is the same: the
//! codec reads and writes `body_len` itself (`length_adjustment(8)`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use prost::Message;
use proto::pb::{self, error::ErrorCode};
use proto::{Kind, TokenKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::{Framed, LengthDelimitedCodec, length_delimited};

/// Header bytes after the 4-byte `body_len`: version, kind, flags, seq.
const REST_OF_HEADER: usize = 8;

/// What the server is told at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub key: TokenKey,
    /// Heartbeat interval for every network type; `None` takes rule 5's
    /// per-network defaults.
    pub heartbeat_ms: Option<u32>,
    /// Rule 1: time allowed from accept to LOGIN.
    pub login_timeout: Duration,
    /// Rule 11: largest accepted body.
    pub max_body: usize,
    /// After an ERROR, how long to drain the client's input before closing.
    pub linger: Duration,
    /// Initial capacity of each connection's read and write buffers
    /// (`Framed::with_capacity`); tokio-util's default is 8 KiB each.
    pub buffer_capacity: usize,
}

impl Config {
    /// Defaults of PROTOCOL.md with the given key.
    pub fn new(key: TokenKey) -> Config {
        Config {
            key,
            heartbeat_ms: None,
            login_timeout: Duration::from_secs(10),
            max_body: proto::codec::DEFAULT_MAX_BODY,
            linger: Duration::from_secs(2),
            buffer_capacity: 8 * 1024,
        }
    }

    fn heartbeat_ms(&self, network: i32) -> u32 {
        use pb::NetworkType as N;
        self.heartbeat_ms
            .unwrap_or(match N::try_from(network).unwrap_or(N::NetworkUnknown) {
                N::Wired => 10_000,
                N::Cell5g | N::Cell4g | N::Cell3g => 90_000,
                N::Cell2g => 240_000,
                N::Wifi | N::NetworkUnknown => 30_000,
            })
    }
}

/// Binds `addr` with SO_REUSEADDR and a 4,096 backlog (tokio's `bind`
/// would give 1,024).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts forever, one task per connection.
pub async fn serve(listener: TcpListener, cfg: Config) {
    let shared = Arc::new(Shared {
        cfg,
        next_session: AtomicU64::new(1),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                eprintln!("baseline: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    cfg: Config,
    next_session: AtomicU64,
}

type Conn = Framed<TcpStream, LengthDelimitedCodec>;

/// How a connection ends.
enum End {
    /// Close without a word (EOF, I/O error, idle expiry).
    Quiet,
    /// Send this ERROR frame, then close.
    Error(Bytes),
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let codec = length_delimited::Builder::new()
        .length_field_length(4)
        .length_adjustment(REST_OF_HEADER as isize)
        .max_frame_length(cfg.max_body)
        .new_codec();
    let mut conn = Framed::with_capacity(stream, codec, cfg.buffer_capacity);
    if let End::Error(frame) = session(&mut conn, &shared).await
        && conn.send(frame).await.is_ok()
    {
        linger(conn.into_inner(), cfg.linger).await;
    }
}

async fn session(conn: &mut Conn, shared: &Shared) -> End {
    let cfg = &shared.cfg;
    let first = match timeout(cfg.login_timeout, conn.next()).await {
        Err(_) => {
            return End::Error(error(
                0,
                ErrorCode::LoginTimeout,
                "no LOGIN within the login timeout",
            ));
        }
        Ok(None) => return End::Quiet,
        Ok(Some(item)) => item,
    };
    let (kind, seq, body) = match frame(first, conn.read_buffer()) {
        Ok(f) => f,
        Err(end) => return end,
    };
    let hb_ms = match login(shared, kind, seq, body) {
        Ok((ack, hb_ms)) => {
            if conn.send(ack).await.is_err() {
                return End::Quiet;
            }
            hb_ms
        }
        Err(end) => return end,
    };
    let idle = Duration::from_millis(3 * u64::from(hb_ms));
    loop {
        let item = match timeout(idle, conn.next()).await {
            // Rule 4: an idle session is closed without a word.
            Err(_) | Ok(None) => return End::Quiet,
            Ok(Some(item)) => item,
        };
        let (kind, seq, body) = match frame(item, conn.read_buffer()) {
            Ok(f) => f,
            Err(end) => return end,
        };
        let reply = match active(kind, seq, body, hb_ms) {
            Ok(reply) => reply,
            Err(end) => return end,
        };
        if conn.send(reply).await.is_err() {
            return End::Quiet;
        }
    }
}

/// Checks the header of a decoded item (rule 11) and splits off the body.
/// `buffered` is what the codec holds, for the `seq` of a refused header.
fn frame(item: io::Result<BytesMut>, buffered: &BytesMut) -> Result<(Kind, u32, Bytes), End> {
    let mut f = match item {
        Ok(f) => f,
        Err(e) if is_too_large(&e) => {
            let seq = buffered
                .get(8..12)
                .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
            return Err(End::Error(error(
                seq,
                ErrorCode::TooLarge,
                "frame body exceeds the maximum",
            )));
        }
        Err(_) => return Err(End::Quiet),
    };
    let seq = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
    if f[0] != proto::codec::VERSION {
        let msg = "unsupported protocol version";
        return Err(End::Error(error(seq, ErrorCode::BadFrame, msg)));
    }
    let Some(kind) = Kind::from_u8(f[1]) else {
        let msg = "unknown frame kind";
        return Err(End::Error(error(seq, ErrorCode::BadFrame, msg)));
    };
    f.advance(REST_OF_HEADER);
    Ok((kind, seq, f.freeze()))
}

fn is_too_large(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<length_delimited::LengthDelimitedCodecError>())
}

/// Rules 1 to 3: the LOGIN_ACK and the interval, or the ERROR.
fn login(shared: &Shared, kind: Kind, seq: u32, body: Bytes) -> Result<(Bytes, u32), End> {
    let cfg = &shared.cfg;
    if kind != Kind::Login {
        let msg = "the first frame must be LOGIN";
        return Err(End::Error(error(seq, ErrorCode::Unauthenticated, msg)));
    }
    let Ok(login) = pb::Login::decode(body) else {
        let msg = "LOGIN body does not decode";
        return Err(End::Error(error(seq, ErrorCode::BadFrame, msg)));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now_s = now.as_secs();
    if let Err(e) = cfg
        .key
        .verify(&login.token, login.uin, login.device_id, now_s)
    {
        let msg = e.to_string();
        return Err(End::Error(error(seq, ErrorCode::Unauthenticated, &msg)));
    }
    let hb_ms = cfg.heartbeat_ms(login.network);
    let ack = pb::LoginAck {
        heartbeat_ms: hb_ms,
        idle_timeout_ms: hb_ms.saturating_mul(3),
        server_time_ms: now.as_millis() as u64,
        session_id: shared.next_session.fetch_add(1, Ordering::Relaxed),
    };
    Ok((reply(Kind::LoginAck, seq, &ack), hb_ms))
}

/// A frame on a logged-in session: its reply, or the ERROR that ends it.
fn active(kind: Kind, seq: u32, body: Bytes, hb_ms: u32) -> Result<Bytes, End> {
    let bad = |what: &str| End::Error(error(seq, ErrorCode::BadFrame, what));
    let unavailable = pb::Status::Unavailable as i32;
    Ok(match kind {
        Kind::Heartbeat => {
            pb::Heartbeat::decode(body).map_err(|_| bad("HEARTBEAT body does not decode"))?;
            let ack = pb::HeartbeatAck {
                next_heartbeat_ms: hb_ms,
                idle_timeout_ms: hb_ms.saturating_mul(3),
            };
            reply(Kind::HeartbeatAck, seq, &ack)
        }
        Kind::Login => return Err(bad("already logged in")),
        Kind::Send => {
            let req = pb::SendReq::decode(body).map_err(|_| bad("SEND body does not decode"))?;
            let ack = pb::SendAck {
                status: unavailable,
                channel: req.channel,
                msg_id: 0,
                client_msg_id: req.client_msg_id,
            };
            reply(Kind::SendAck, seq, &ack)
        }
        Kind::Join => {
            let join = pb::Join::decode(body).map_err(|_| bad("JOIN body does not decode"))?;
            let ack = pb::JoinAck {
                status: unavailable,
                channel: join.channel,
                newest_msg_id: 0,
            };
            reply(Kind::JoinAck, seq, &ack)
        }
        Kind::Leave => {
            let leave = pb::Leave::decode(body).map_err(|_| bad("LEAVE body does not decode"))?;
            let ack = pb::LeaveAck {
                status: unavailable,
                channel: leave.channel,
            };
            reply(Kind::LeaveAck, seq, &ack)
        }
        // Rule 13: ERROR(UNAVAILABLE) does not close.
        Kind::Sync => error(seq, ErrorCode::Unavailable, "no logic tier"),
        _ => return Err(bad("not a client frame kind")),
    })
}

/// A codec item for a reply: the frame without its `body_len`, which the
/// codec writes.
fn reply<M: Message>(kind: Kind, seq: u32, msg: &M) -> Bytes {
    let mut out = BytesMut::new();
    proto::encode(&mut out, kind, seq, msg);
    out.advance(4);
    out.freeze()
}

fn error(seq: u32, code: ErrorCode, message: &str) -> Bytes {
    let msg = pb::Error {
        code: code as i32,
        message: message.to_owned(),
    };
    reply(Kind::Error, seq, &msg)
}

/// Half-closes and discards the client's input until it closes or `linger`
/// passes, so the ERROR already written is read rather than reset away.
async fn linger(mut stream: TcpStream, linger: Duration) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = timeout(linger, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
