//! Requests written to the logic server and not yet answered, so that a
//! link that dies under them still gets each its rule-13 answer instead of
//! leaving the client waiting.
//!
//! The uplink records every SEND, JOIN, LEAVE and SYNC it writes to the
//! link, keyed by (session, seq), and forgets it when the logic server's
//! answer to that session with that seq comes back: the ACK, or the ERROR
//! of a terminate. (PUSHes are not answers; a request may use seq 0.) When the link
//! falls, what is left is exactly the requests nobody will answer, in the
//! order they were written; the uplink bounces them to their workers.
//!
//! Sans-io: a plain table, fed frames, no sockets. It costs one hash
//! insert and one remove per request, on the uplink thread.

use std::collections::HashMap;

use proto::link::SessionRef;
use proto::{Frame, Kind, codec};

/// (connection, epoch, seq).
type Key = (u64, u64, u32);

/// Requests on the link awaiting their answer.
#[derive(Debug, Default)]
pub struct InFlight {
    /// The request and the order it was written in.
    waiting: HashMap<Key, (u64, SessionRef, Frame)>,
    written: u64,
}

/// Kinds the logic server answers with the request's seq.
fn awaits_answer(kind: Kind) -> bool {
    matches!(kind, Kind::Send | Kind::Join | Kind::Leave | Kind::Sync)
}

/// Kinds that answer a request (the last frame of the answer, for SYNC).
fn is_answer(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::SendAck | Kind::JoinAck | Kind::LeaveAck | Kind::SyncAck | Kind::Error
    )
}

impl InFlight {
    /// `frame` from `session` was written to the link.
    pub fn written(&mut self, session: SessionRef, frame: Frame) {
        if awaits_answer(frame.kind) {
            self.written += 1;
            let key = (session.conn, session.epoch, frame.seq);
            self.waiting.insert(key, (self.written, session, frame));
        }
    }

    /// The logic server sent `frame` (encoded client frame bytes) to
    /// `session`; if it answers a request, that request is done.
    pub fn answered(&mut self, session: SessionRef, frame: &[u8]) {
        if let Ok(Some(h)) = codec::peek_header(frame, usize::MAX)
            && is_answer(h.kind)
        {
            self.waiting.remove(&(session.conn, session.epoch, h.seq));
        }
    }

    /// Everything still waiting, oldest first; the table is left empty.
    pub fn take_all(&mut self) -> Vec<(SessionRef, Frame)> {
        let mut all: Vec<_> = self.waiting.drain().map(|(_, v)| v).collect();
        all.sort_unstable_by_key(|(n, ..)| *n);
        all.into_iter().map(|(_, s, f)| (s, f)).collect()
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use proto::pb;

    use super::*;

    fn s(conn: u64) -> SessionRef {
        SessionRef { conn, epoch: 1 }
    }

    fn req(kind: Kind, seq: u32) -> Frame {
        Frame {
            kind,
            flags: 0,
            seq,
            body: Bytes::new(),
        }
    }

    fn reply(kind: Kind, seq: u32) -> BytesMut {
        let mut b = BytesMut::new();
        match kind {
            Kind::Push => proto::encode(&mut b, kind, seq, &pb::Push::default()),
            _ => proto::encode(&mut b, kind, seq, &pb::SendAck::default()),
        }
        b
    }

    #[test]
    fn an_answer_with_the_same_session_and_seq_clears_the_request() {
        let mut t = InFlight::default();
        t.written(s(1), req(Kind::Send, 5));
        t.written(s(1), req(Kind::Sync, 6));
        t.written(s(2), req(Kind::Join, 5));
        assert_eq!(t.len(), 3);
        t.answered(s(1), &reply(Kind::SendAck, 5));
        // A PUSH (seq 0) or another session's seq answers nothing.
        t.answered(s(1), &reply(Kind::Push, 0));
        t.answered(s(3), &reply(Kind::JoinAck, 5));
        // The SYNC is done only when its SYNC_ACK comes, not at a PUSH.
        t.answered(s(1), &reply(Kind::Push, 6));
        assert_eq!(t.len(), 2);
        t.answered(s(1), &reply(Kind::SyncAck, 6));
        t.answered(s(2), &reply(Kind::Error, 5));
        assert!(t.is_empty());
    }

    #[test]
    fn a_request_with_seq_0_is_cleared_by_its_ack_not_by_a_push() {
        let mut t = InFlight::default();
        t.written(s(1), req(Kind::Send, 0));
        t.answered(s(1), &reply(Kind::Push, 0));
        assert_eq!(t.len(), 1);
        t.answered(s(1), &reply(Kind::SendAck, 0));
        assert!(t.is_empty());
    }

    #[test]
    fn an_old_epoch_is_another_session() {
        let mut t = InFlight::default();
        t.written(s(1), req(Kind::Leave, 9));
        let later = SessionRef { conn: 1, epoch: 2 };
        t.answered(later, &reply(Kind::LeaveAck, 9));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn only_requests_that_get_answers_are_kept() {
        let mut t = InFlight::default();
        t.written(s(1), req(Kind::Heartbeat, 1));
        t.written(s(1), req(Kind::Login, 2));
        assert!(t.is_empty());
    }

    #[test]
    fn what_is_left_comes_back_oldest_first_and_once() {
        let mut t = InFlight::default();
        for (conn, seq) in [(7, 1), (3, 2), (9, 3), (3, 4), (1, 5)] {
            t.written(s(conn), req(Kind::Send, seq));
        }
        t.answered(s(9), &reply(Kind::SendAck, 3));
        let left: Vec<(u64, u32)> = t
            .take_all()
            .into_iter()
            .map(|(s, f)| (s.conn, f.seq))
            .collect();
        assert_eq!(left, vec![(7, 1), (3, 2), (3, 4), (1, 5)]);
        assert!(t.take_all().is_empty());
    }
}
