//! WebSocket framing (RFC 6455 section 5), sans-io: a streaming decoder
//! of client frames and encoders of server frames.
//!
//! The decoder unmasks binary payload into the caller's stream buffer as
//! it arrives, whole or in pieces, so a large frame is never held twice
//! and a connection between frames keeps only [`Decoder`]'s 16 bytes.
//! Control frames (at most 125 bytes, never fragmented) are returned
//! whole, once all of one has arrived. What the client may not send ends
//! the connection with the close code PROTOCOL.md and RFC 6455 give: an
//! unmasked frame, RSV bits, an unknown opcode, a bad fragment sequence
//! (1002), a text message (BAD_FRAME, 1008), a frame announcing more
//! payload than the limit (1009).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::close;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const MASKED: u8 = 0x80;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A whole control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying the same payload.
    Ping(Bytes),
    Pong,
    /// The client closes: its code (none if it sent none) and reason.
    Close(Option<u16>, Bytes),
}

/// Why the connection ends; [`WsError::code`] is the close code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("client frame not masked")]
    Unmasked,
    #[error("reserved bits set")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("bad fragment sequence")]
    Fragments,
    #[error("bad control frame")]
    BadControl,
    /// PROTOCOL.md: a text message is a BAD_FRAME.
    #[error("a text message")]
    Text,
    #[error("a frame of {0} bytes, over the limit")]
    TooBig(u64),
}

impl WsError {
    /// The close code this error ends the connection with.
    pub fn code(self) -> u16 {
        match self {
            WsError::Text => close::POLICY,
            WsError::TooBig(_) => close::TOO_BIG,
            _ => close::PROTOCOL_ERROR,
        }
    }
}

/// The client's frames as they arrive (see the module doc).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    /// Payload bytes of the binary frame in progress still to come.
    remaining: u64,
    mask: [u8; 4],
    /// Position in `mask` of the next payload byte.
    phase: u8,
    /// A binary message is open (its last frame had no FIN).
    in_message: bool,
}

impl Decoder {
    /// True between frames with no message open: nothing is partial.
    pub fn is_idle(&self) -> bool {
        self.remaining == 0 && !self.in_message
    }

    /// Decodes what `input` holds: binary payload is unmasked onto
    /// `stream`, consumed bytes are taken from `input`. Returns the first
    /// whole control frame met (call again for what follows it), or None
    /// when `input` has no more whole control frame or payload. A data
    /// frame's payload may not exceed `max_frame`.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        stream: &mut BytesMut,
        max_frame: usize,
    ) -> Result<Option<Control>, WsError> {
        loop {
            if self.remaining > 0 {
                let n = (self.remaining.min(input.len() as u64)) as usize;
                if n == 0 {
                    return Ok(None);
                }
                let start = stream.len();
                stream.extend_from_slice(&input[..n]);
                unmask(&mut stream[start..], self.mask, self.phase as usize);
                input.advance(n);
                self.phase = ((self.phase as usize + n) % 4) as u8;
                self.remaining -= n as u64;
                continue;
            }
            let Some((head, len)) = parse_head(input)? else {
                return Ok(None);
            };
            let opcode = head.opcode;
            if opcode >= CLOSE {
                if !head.fin || len > 125 {
                    return Err(WsError::BadControl);
                }
                let total = head.size + len as usize;
                if input.len() < total {
                    return Ok(None);
                }
                input.advance(head.size);
                let mut payload = input.split_to(len as usize);
                unmask(&mut payload, head.mask, 0);
                let payload = payload.freeze();
                return Ok(Some(match opcode {
                    PING => Control::Ping(payload),
                    PONG => Control::Pong,
                    _ => close_of(payload)?,
                }));
            }
            match (opcode, self.in_message) {
                (TEXT, false) => return Err(WsError::Text),
                (BINARY, false) | (CONTINUATION, true) => {}
                _ => return Err(WsError::Fragments),
            }
            if len > max_frame as u64 {
                return Err(WsError::TooBig(len));
            }
            input.advance(head.size);
            self.in_message = !head.fin;
            self.remaining = len;
            self.mask = head.mask;
            self.phase = 0;
        }
    }
}

struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, mask included.
    size: usize,
}

/// The frame header at the front of `b`, if all of it is there, with the
/// payload length. Checks what the header alone can tell.
fn parse_head(b: &[u8]) -> Result<Option<(Head, u64)>, WsError> {
    let [b0, b1, ..] = *b else {
        return Ok(None);
    };
    if b0 & RSV != 0 {
        return Err(WsError::Reserved);
    }
    let opcode = b0 & 0x0f;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(WsError::Opcode(opcode));
    }
    if b1 & MASKED == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, at) = match b1 & 0x7f {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    let Some(mask) = b.get(at..at + 4) else {
        return Ok(None);
    };
    let head = Head {
        fin: b0 & FIN != 0,
        opcode,
        mask: mask.try_into().unwrap(),
        size: at + 4,
    };
    Ok(Some((head, len)))
}

fn close_of(payload: Bytes) -> Result<Control, WsError> {
    match payload.len() {
        0 => Ok(Control::Close(None, Bytes::new())),
        1 => Err(WsError::BadControl),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            Ok(Control::Close(Some(code), payload.slice(2..)))
        }
    }
}

/// XORs `data` with `mask`, starting at mask byte `phase`.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(phase + i) % 4];
    }
}

fn put_head(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(FIN | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// Appends a server binary message (unmasked, one frame) carrying
/// `payload`: one or more whole protocol frames.
pub fn encode_binary(out: &mut BytesMut, payload: &[u8]) {
    put_head(out, BINARY, payload.len());
    out.put_slice(payload);
}

/// Appends the header of a binary frame of `len` bytes, for a caller that
/// writes the payload itself (a `writev` of queued frames).
pub fn encode_binary_head(out: &mut BytesMut, len: usize) {
    put_head(out, BINARY, len);
}

/// Appends a pong answering a ping's `payload`.
pub fn encode_pong(out: &mut BytesMut, payload: &[u8]) {
    put_head(out, PONG, payload.len());
    out.put_slice(payload);
}

/// Appends a close frame with `code` (reason left empty).
pub fn encode_close(out: &mut BytesMut, code: u16) {
    put_head(out, CLOSE, 2);
    out.put_u16(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame: `b0` (FIN, opcode), masked with KEY.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(b0);
        match payload.len() {
            0..=125 => out.put_u8(MASKED | payload.len() as u8),
            126..=0xffff => {
                out.put_u8(MASKED | 126);
                out.put_u16(payload.len() as u16);
            }
            n => {
                out.put_u8(MASKED | 127);
                out.put_u64(n as u64);
            }
        }
        out.put_slice(&KEY);
        let mut p = payload.to_vec();
        unmask(&mut p, KEY, 0);
        out.put_slice(&p);
        out.to_vec()
    }

    fn run(d: &mut Decoder, bytes: &[u8]) -> (Vec<Control>, Vec<u8>, Result<(), WsError>) {
        let (mut input, mut stream) = (BytesMut::from(bytes), BytesMut::new());
        let mut controls = Vec::new();
        loop {
            match d.decode(&mut input, &mut stream, 1 << 16) {
                Ok(Some(c)) => controls.push(c),
                Ok(None) => return (controls, stream.to_vec(), Ok(())),
                Err(e) => return (controls, stream.to_vec(), Err(e)),
            }
        }
    }

    #[test]
    fn rfc_6455_masked_hello_as_binary() {
        // RFC 6455 5.7's masked "Hello", with the binary opcode.
        let wire = hex::decode("828537fa213d7f9f4d5158").unwrap();
        let (c, s, r) = run(&mut Decoder::default(), &wire);
        assert_eq!((c, s, r), (vec![], b"Hello".to_vec(), Ok(())));
    }

    #[test]
    fn fragments_and_messages_form_one_stream_whatever_the_split() {
        let mut wire = client(BINARY, b"abc");
        wire.extend(client(CONTINUATION, b"de"));
        wire.extend(client(FIN | PING, b"p"));
        wire.extend(client(FIN | CONTINUATION, b"fgh"));
        wire.extend(client(FIN | BINARY, &[7; 300]));
        let mut want = b"abcdefgh".to_vec();
        want.extend([7; 300]);
        // Fed whole, and one byte at a time.
        let (c, s, r) = run(&mut Decoder::default(), &wire);
        assert_eq!(
            (c, &s, r),
            (vec![Control::Ping(Bytes::from_static(b"p"))], &want, Ok(()))
        );
        let mut d = Decoder::default();
        let (mut input, mut stream) = (BytesMut::new(), BytesMut::new());
        let mut pings = 0;
        for &b in &wire {
            input.put_u8(b);
            while let Some(c) = d.decode(&mut input, &mut stream, 1 << 16).unwrap() {
                assert_eq!(c, Control::Ping(Bytes::from_static(b"p")));
                pings += 1;
            }
        }
        assert_eq!((&stream[..], pings), (&want[..], 1));
        assert!(d.is_idle());
    }

    #[test]
    fn what_a_client_may_not_send_ends_it_with_the_right_code() {
        let cases: [(Vec<u8>, WsError, u16); 7] = [
            (vec![0x82, 0x01, b'x'], WsError::Unmasked, 1002),
            (client(FIN | 0x40 | BINARY, b"x"), WsError::Reserved, 1002),
            (client(FIN | 0x3, b"x"), WsError::Opcode(3), 1002),
            (client(FIN | CONTINUATION, b"x"), WsError::Fragments, 1002),
            (client(PING, b"x"), WsError::BadControl, 1002),
            (client(FIN | TEXT, b"{}"), WsError::Text, 1008),
            (
                client(FIN | BINARY, &[0; 70_000]),
                WsError::TooBig(70_000),
                1009,
            ),
        ];
        for (wire, err, code) in cases {
            let (_, stream, r) = run(&mut Decoder::default(), &wire);
            assert_eq!(r, Err(err));
            assert_eq!(err.code(), code);
            assert!(stream.is_empty(), "{err}: nothing reached the session");
        }
        // A new message while one is open.
        let mut wire = client(BINARY, b"a");
        wire.extend(client(FIN | BINARY, b"b"));
        assert_eq!(
            run(&mut Decoder::default(), &wire).2,
            Err(WsError::Fragments)
        );
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend(b"bye");
        let (c, _, r) = run(&mut Decoder::default(), &client(FIN | CLOSE, &payload));
        assert_eq!(r, Ok(()));
        assert_eq!(c, [Control::Close(Some(1000), Bytes::from_static(b"bye"))]);
        let (c, _, _) = run(&mut Decoder::default(), &client(FIN | CLOSE, b""));
        assert_eq!(c, [Control::Close(None, Bytes::new())]);
        let (_, _, r) = run(&mut Decoder::default(), &client(FIN | CLOSE, b"x"));
        assert_eq!(r, Err(WsError::BadControl));
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        let mut out = BytesMut::new();
        encode_binary(&mut out, b"hi");
        assert_eq!(&out[..], [0x82, 2, b'h', b'i']);
        out.clear();
        encode_binary_head(&mut out, 300);
        assert_eq!(&out[..], [0x82, 126, 0x01, 0x2c]);
        out.clear();
        encode_binary_head(&mut out, 70_000);
        assert_eq!(&out[..], [0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        out.clear();
        encode_close(&mut out, 1001);
        assert_eq!(&out[..], [0x88, 2, 0x03, 0xe9]);
        out.clear();
        encode_pong(&mut out, b"p");
        assert_eq!(&out[..], [0x8a, 1, b'p']);
    }

    #[test]
    fn the_decoder_is_small() {
        assert!(std::mem::size_of::<Decoder>() <= 16);
    }
}
