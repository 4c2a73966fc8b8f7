//! Encoding of what the logic tier sends to sessions: client-protocol frames
//! (PROTOCOL.md) wrapped in link frames (`proto::link`), appended to the
//! caller's per-gateway batch buffer.

use bytes::{Bytes, BytesMut};
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{self, SessionRef};
use proto::pb;

/// Who sent a client frame, and the `seq` to echo in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub gw: u64,
    pub session: SessionRef,
    pub uin: u64,
    pub device: u32,
    pub seq: u32,
}

/// Encodes one whole client frame (header and body) into fresh bytes.
pub fn client_frame<M: Message>(kind: Kind, seq: u32, msg: &M) -> Bytes {
    let mut f = BytesMut::with_capacity(codec::HEADER_LEN + msg.encoded_len());
    codec::encode(&mut f, kind, seq, msg);
    f.freeze()
}

/// Appends a `Deliver` of one reply frame to the origin session.
pub fn reply<M: Message>(out: &mut BytesMut, to: &Origin, kind: Kind, msg: &M) {
    link::encode_deliver(out, &[to.session], &client_frame(kind, to.seq, msg));
}

/// Appends a SEND_ACK.
pub fn send_ack(
    out: &mut BytesMut,
    to: &Origin,
    status: pb::Status,
    channel: u64,
    msg_id: u64,
    cmid: u64,
) {
    let ack = pb::SendAck {
        status: status as i32,
        channel,
        msg_id,
        client_msg_id: cmid,
    };
    reply(out, to, Kind::SendAck, &ack);
}

/// Appends a JOIN_ACK.
pub fn join_ack(out: &mut BytesMut, to: &Origin, status: pb::Status, channel: u64, newest: u64) {
    let ack = pb::JoinAck {
        status: status as i32,
        channel,
        newest_msg_id: newest,
    };
    reply(out, to, Kind::JoinAck, &ack);
}

/// Appends a LEAVE_ACK.
pub fn leave_ack(out: &mut BytesMut, to: &Origin, status: pb::Status, channel: u64) {
    let ack = pb::LeaveAck {
        status: status as i32,
        channel,
    };
    reply(out, to, Kind::LeaveAck, &ack);
}

/// Appends a `Terminate`: ERROR(`code`) echoing `seq`, then close.
pub fn terminate(
    out: &mut BytesMut,
    session: SessionRef,
    seq: u32,
    code: pb::error::ErrorCode,
    why: &str,
) {
    let err = pb::Error {
        code: code as i32,
        message: why.to_string(),
    };
    link::encode_terminate(out, session, &client_frame(Kind::Error, seq, &err));
}

/// Appends a `Kick` of `session` for a duplicate login.
pub fn kick_duplicate(out: &mut BytesMut, session: SessionRef) {
    link::encode_kick(out, session, pb::KickReason::DuplicateLogin as i32);
}

/// The PUSH frame of a stored message (`seq` 0, as for every push).
pub fn push_frame(channel: u64, msg_id: u64, from: &Origin, sent_at_ms: u64, body: Bytes) -> Bytes {
    let push = pb::Push {
        channel,
        msg_id,
        from_uin: from.uin,
        from_device: from.device,
        sent_at_ms,
        body,
    };
    client_frame(Kind::Push, 0, &push)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::link::LinkMsg;

    #[test]
    fn reply_is_one_deliver_to_the_origin_echoing_seq() {
        let to = Origin {
            gw: 1,
            session: SessionRef { conn: 3, epoch: 4 },
            uin: 5,
            device: 6,
            seq: 77,
        };
        let mut out = BytesMut::new();
        send_ack(&mut out, &to, pb::Status::Duplicate, 9, 2, 11);
        let Some(LinkMsg::Deliver { targets, frame }) =
            link::decode(&mut out, 1 << 16).expect("valid")
        else {
            panic!("expected a Deliver");
        };
        assert_eq!(targets, vec![to.session]);
        let f = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 16)
            .expect("valid")
            .expect("whole");
        assert_eq!((f.kind, f.seq), (Kind::SendAck, 77));
        let ack = pb::SendAck::decode(f.body).expect("decodes");
        assert_eq!(
            ack,
            pb::SendAck {
                status: pb::Status::Duplicate as i32,
                channel: 9,
                msg_id: 2,
                client_msg_id: 11
            }
        );
    }
}
