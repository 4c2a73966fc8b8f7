//! A client frame a gateway forwarded, checked and decoded once for both
//! node kinds (the embedded shards and the Redis node): a frame shorter
//! than its header, a header the codec refuses (TOO_LARGE for an
//! oversized body, BAD_FRAME otherwise), a length that disagrees with the
//! header, a kind the logic tier does not serve, or a body that does not
//! decode (`proto::request`) are each refused with the ERROR that
//! terminates the session.

use bytes::Bytes;
use proto::codec::{self, Header};
use proto::pb::{self, error::ErrorCode};
use proto::request::Request;

/// What the logic tier serves.
#[derive(Debug, Clone, PartialEq)]
pub enum LogicRequest {
    Send(pb::SendReq),
    Sync(pb::SyncReq),
    Join(u64),
    Leave(u64),
}

/// Why a forwarded frame is refused: the ERROR to terminate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub seq: u32,
    pub code: ErrorCode,
    pub why: String,
}

/// The request in `frame` with its seq, bodies over `max_body` refused.
pub fn parse(frame: &Bytes, max_body: usize) -> Result<(u32, LogicRequest), Refused> {
    let refuse = |seq, code, why: &str| Refused {
        seq,
        code,
        why: why.to_owned(),
    };
    let Some(hdr) = frame.first_chunk::<{ codec::HEADER_LEN }>() else {
        return Err(refuse(0, ErrorCode::BadFrame, "short frame"));
    };
    let header = Header::parse(hdr, max_body).map_err(|e| {
        let code = match e {
            codec::DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadFrame,
        };
        refuse(e.seq(), code, &e.to_string())
    })?;
    let seq = header.seq;
    if frame.len() != codec::HEADER_LEN + header.body_len as usize {
        return Err(refuse(seq, ErrorCode::BadFrame, "length mismatch"));
    }
    let body = frame.slice(codec::HEADER_LEN..);
    let request = match Request::decode(header.kind, body) {
        Ok(Request::Send(m)) => LogicRequest::Send(m),
        Ok(Request::Sync(m)) => LogicRequest::Sync(m),
        Ok(Request::Join(m)) => LogicRequest::Join(m.channel),
        Ok(Request::Leave(m)) => LogicRequest::Leave(m.channel),
        Ok(Request::Login(_) | Request::Heartbeat(_)) => {
            return Err(refuse(seq, ErrorCode::BadFrame, "not a logic request"));
        }
        Err(e) => return Err(refuse(seq, ErrorCode::BadFrame, &e.to_string())),
    };
    Ok((seq, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proto::Kind;

    fn frame(kind: Kind, seq: u32, msg: &impl prost::Message) -> Bytes {
        let mut out = BytesMut::new();
        proto::encode(&mut out, kind, seq, msg);
        out.freeze()
    }

    #[test]
    fn requests_decode_and_everything_else_is_refused_with_its_error() {
        let join = frame(Kind::Join, 4, &pb::Join { channel: 9 });
        assert_eq!(parse(&join, 1024), Ok((4, LogicRequest::Join(9))));
        let hb = frame(Kind::Heartbeat, 5, &pb::Heartbeat {});
        assert_eq!(parse(&hb, 1024).unwrap_err().why, "not a logic request");
        let big = frame(
            Kind::Send,
            6,
            &pb::SendReq {
                body: vec![0; 2000].into(),
                ..Default::default()
            },
        );
        let e = parse(&big, 1024).unwrap_err();
        assert_eq!((e.seq, e.code), (6, ErrorCode::TooLarge));
        assert_eq!(
            parse(&big.slice(..big.len() - 1), 4096).unwrap_err().why,
            "length mismatch"
        );
        assert_eq!(parse(&big.slice(..3), 4096).unwrap_err().why, "short frame");
        let mut bad = BytesMut::new();
        proto::codec::encode_raw(&mut bad, Kind::Sync, 7, &[0x0a, 5, 1]);
        let e = parse(&bad.freeze(), 1024).unwrap_err();
        assert_eq!(
            (e.seq, e.code, e.why.as_str()),
            (7, ErrorCode::BadFrame, "SYNC body does not decode")
        );
    }
}
