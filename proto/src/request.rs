//! Client requests decoded by kind: the one place that decides which kinds
//! a client may send and that a body which does not decode is a bad frame
//! (PROTOCOL.md: ERROR(`BAD_FRAME`) and close). The gateway decodes only
//! what it answers itself (a SEND it forwards is never decoded there: the
//! hot path copies no body); the logic tier decodes what it is forwarded.

use bytes::Bytes;
use prost::Message;

use crate::Kind;
use crate::pb;

/// A client-to-server frame's body, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Login(pb::Login),
    Heartbeat(pb::Heartbeat),
    Send(pb::SendReq),
    Sync(pb::SyncReq),
    Join(pb::Join),
    Leave(pb::Leave),
}

/// Why a frame is not a request: each is a BAD_FRAME, and its `Display`
/// is the ERROR message sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// A server-to-client kind (or one a client may not send).
    #[error("not a client frame kind")]
    NotARequest(Kind),
    /// The body is not the kind's message.
    #[error("{} body does not decode", name(*.0))]
    Body(Kind),
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Login => "LOGIN",
        Kind::Heartbeat => "HEARTBEAT",
        Kind::Send => "SEND",
        Kind::Sync => "SYNC",
        Kind::Join => "JOIN",
        Kind::Leave => "LEAVE",
        _ => "frame",
    }
}

/// Decodes `body`, the body of a `kind` frame, as `M` when the caller
/// already knows which message the kind carries (the gateway, answering a
/// request itself). A `Bytes` slice: bytes fields share it, nothing is
/// copied.
pub fn decode_body<M: Message + Default>(kind: Kind, body: Bytes) -> Result<M, BadRequest> {
    M::decode(body).map_err(|_| BadRequest::Body(kind))
}

impl Request {
    /// Decodes `body` as the message of `kind`.
    pub fn decode(kind: Kind, body: Bytes) -> Result<Request, BadRequest> {
        use decode_body as de;
        Ok(match kind {
            Kind::Login => Request::Login(de(kind, body)?),
            Kind::Heartbeat => Request::Heartbeat(de(kind, body)?),
            Kind::Send => Request::Send(de(kind, body)?),
            Kind::Sync => Request::Sync(de(kind, body)?),
            Kind::Join => Request::Join(de(kind, body)?),
            Kind::Leave => Request::Leave(de(kind, body)?),
            other => return Err(BadRequest::NotARequest(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_kind_decodes_to_its_message() {
        let join = pb::Join { channel: 9 }.encode_to_vec();
        assert_eq!(
            Request::decode(Kind::Join, join.into()),
            Ok(Request::Join(pb::Join { channel: 9 }))
        );
        assert_eq!(
            Request::decode(Kind::Heartbeat, Bytes::new()),
            Ok(Request::Heartbeat(pb::Heartbeat {}))
        );
    }

    #[test]
    fn server_kinds_and_bad_bodies_are_bad_requests_with_their_messages() {
        let e = Request::decode(Kind::Push, Bytes::new()).unwrap_err();
        assert_eq!(e, BadRequest::NotARequest(Kind::Push));
        assert_eq!(e.to_string(), "not a client frame kind");
        // Field 1 as a length-delimited field of 5 bytes with only 1 there.
        let e = Request::decode(Kind::Send, Bytes::from_static(&[0x0a, 5, 1])).unwrap_err();
        assert_eq!(e, BadRequest::Body(Kind::Send));
        assert_eq!(e.to_string(), "SEND body does not decode");
    }
}
