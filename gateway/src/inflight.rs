//! Requests written to the logic server and not yet answered: each gets its
//! answer exactly once, from the logic server, from its deadline, or from
//! a link that dies under it (rule 13's UNAVAILABLE).
//!
//! The uplink records every SEND, JOIN, LEAVE and SYNC it writes to the
//! link. On the link the request carries a *link seq* chosen here in place
//! of the client's `seq` (a u32, unique among the requests in flight, never
//! 0); the logic server echoes it like any seq (PROTOCOL.md: "a reply
//! echoes the seq of the request it answers"; it never reads it). When the
//! answer comes back (the ACK, or the ERROR of a terminate) to that
//! session with that link seq, the client's own seq is put back and the
//! request is done. Keying by link seq, not by (session, client seq),
//! keeps two requests of one session that share a client seq apart: both
//! are answered, each with its own answer. PUSHes carry seq 0 and are
//! never answers; a PUSH carrying a request's link seq gets the client's
//! seq back too, without ending the request.
//!
//! Every request is due `timeout_ms` after it was written. [`InFlight::expire`]
//! hands back the requests that are due, oldest first, for the uplink to
//! answer UNAVAILABLE; an answer arriving after that is *late* and is
//! dropped (the client already has its answer). When the link falls, what
//! is left ([`InFlight::take_all`]) is exactly the requests nobody will
//! answer, in the order they were written.
//!
//! Sans-io: a plain table, fed frames and the time (ms on any monotonic
//! clock), no sockets. It costs one hash insert and one remove per request
//! on the uplink thread, and one copy of each answer frame (its seq is
//! rewritten; answers are small).

use std::collections::{HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};
use proto::link::SessionRef;
use proto::{Frame, Kind, codec};

/// Where `seq` sits in a client frame header (PROTOCOL.md).
const SEQ_AT: usize = 8;

#[derive(Debug)]
struct Entry {
    session: SessionRef,
    /// The request as the client sent it (its own seq).
    frame: Frame,
    due_ms: u64,
}

/// What to do with a frame the logic server sent to one session.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Deliver this (the client's seq restored where it answers a request).
    Pass(Bytes),
    /// The answer to a request already answered (by its deadline): the
    /// frame as it came, for the caller to drop (or, for a terminate, to
    /// act on anyway).
    Late(Bytes),
}

/// Requests on the link awaiting their answer.
#[derive(Debug)]
pub struct InFlight {
    waiting: HashMap<u32, Entry>,
    /// (due, link seq) in the order written, so in due order too (the
    /// timeout is one constant); entries answered meanwhile are skipped
    /// lazily.
    order: VecDeque<(u64, u32)>,
    last_seq: u32,
    timeout_ms: u64,
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

/// `frame` (a whole client frame) with its seq replaced.
fn with_seq(frame: &[u8], seq: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(frame.len());
    b.put_slice(frame);
    b[SEQ_AT..SEQ_AT + 4].copy_from_slice(&seq.to_be_bytes());
    b.freeze()
}

impl InFlight {
    /// An empty table whose requests are due `timeout_ms` after writing.
    pub fn new(timeout_ms: u64) -> InFlight {
        InFlight {
            waiting: HashMap::new(),
            order: VecDeque::new(),
            last_seq: 0,
            timeout_ms,
        }
    }

    /// `frame` from `session` is being written to the link at `now_ms`;
    /// returns the frame to write (a request gets its link seq).
    pub fn written(&mut self, session: SessionRef, frame: Frame, now_ms: u64) -> Frame {
        if !awaits_answer(frame.kind) {
            return frame;
        }
        let seq = self.next_seq();
        let due_ms = now_ms.saturating_add(self.timeout_ms);
        let wire = Frame {
            seq,
            ..frame.clone()
        };
        self.waiting.insert(
            seq,
            Entry {
                session,
                frame,
                due_ms,
            },
        );
        self.order.push_back((due_ms, seq));
        self.compact();
        wire
    }

    /// A link seq not 0 and not in flight.
    fn next_seq(&mut self) -> u32 {
        loop {
            self.last_seq = self.last_seq.wrapping_add(1);
            if self.last_seq != 0 && !self.waiting.contains_key(&self.last_seq) {
                return self.last_seq;
            }
        }
    }

    /// The logic server sent `frame` (a whole client frame) to `session`
    /// alone: restores the client's seq if it belongs to a request, and
    /// ends the request if it answers it.
    pub fn answered(&mut self, session: SessionRef, frame: Bytes) -> Answer {
        let Ok(Some(h)) = codec::peek_header(&frame, usize::MAX) else {
            return Answer::Pass(frame);
        };
        if h.seq == 0 {
            return Answer::Pass(frame);
        }
        match self.waiting.get(&h.seq) {
            Some(e) if e.session == session => {
                let restored = with_seq(&frame, e.frame.seq);
                if is_answer(h.kind) {
                    self.waiting.remove(&h.seq);
                }
                Answer::Pass(restored)
            }
            _ if is_answer(h.kind) => Answer::Late(frame),
            _ => Answer::Pass(frame),
        }
    }

    /// Takes the requests due at `now_ms`, oldest first.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<(SessionRef, Frame)>) {
        while let Some(&(due, seq)) = self.order.front() {
            match self.waiting.get(&seq) {
                Some(e) if e.due_ms == due => {
                    if due > now_ms {
                        return;
                    }
                    self.order.pop_front();
                    if let Some(e) = self.waiting.remove(&seq) {
                        out.push((e.session, e.frame));
                    }
                }
                // Answered already (or its seq since reused).
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// When the oldest request waiting is due.
    pub fn next_due(&mut self) -> Option<u64> {
        while let Some(&(due, seq)) = self.order.front() {
            if self.waiting.get(&seq).is_some_and(|e| e.due_ms == due) {
                return Some(due);
            }
            self.order.pop_front();
        }
        None
    }

    /// Everything still waiting, oldest first; the table is left empty.
    pub fn take_all(&mut self) -> Vec<(SessionRef, Frame)> {
        let mut all = Vec::with_capacity(self.waiting.len());
        for (due, seq) in self.order.drain(..) {
            if self.waiting.get(&seq).is_some_and(|e| e.due_ms == due)
                && let Some(e) = self.waiting.remove(&seq)
            {
                all.push((e.session, e.frame));
            }
        }
        self.waiting.clear();
        all
    }

    /// Drops the skipped entries of `order` once they are most of it, so
    /// that its size follows the requests waiting, not those written.
    fn compact(&mut self) {
        if self.order.len() > 1024 && self.order.len() > 2 * self.waiting.len() {
            let waiting = &self.waiting;
            self.order
                .retain(|(due, seq)| waiting.get(seq).is_some_and(|e| e.due_ms == *due));
        }
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
    use proto::pb;

    use super::*;

    const T: u64 = 5_000;

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

    fn reply(kind: Kind, seq: u32) -> Bytes {
        let mut b = BytesMut::new();
        match kind {
            Kind::Push => proto::encode(&mut b, kind, seq, &pb::Push::default()),
            _ => proto::encode(&mut b, kind, seq, &pb::SendAck::default()),
        }
        b.freeze()
    }

    fn seq_of(b: &Bytes) -> u32 {
        codec::peek_header(b, usize::MAX).unwrap().unwrap().seq
    }

    /// The answer passed on, and its seq.
    fn pass(a: Answer) -> u32 {
        match a {
            Answer::Pass(b) => seq_of(&b),
            Answer::Late(b) => panic!("late: {b:?}"),
        }
    }

    #[test]
    fn an_answer_to_the_link_seq_restores_the_client_seq_and_clears_the_request() {
        let mut t = InFlight::new(T);
        let a = t.written(s(1), req(Kind::Send, 5), 0).seq;
        let b = t.written(s(1), req(Kind::Sync, 6), 0).seq;
        let c = t.written(s(2), req(Kind::Join, 5), 0).seq;
        assert!(a != b && b != c && a != c && a != 0);
        assert_eq!(t.len(), 3);
        assert_eq!(pass(t.answered(s(1), reply(Kind::SendAck, a))), 5);
        // A PUSH (seq 0) answers nothing and keeps its seq.
        assert_eq!(pass(t.answered(s(1), reply(Kind::Push, 0))), 0);
        // The SYNC is done only when its SYNC_ACK comes, not at a PUSH.
        assert_eq!(pass(t.answered(s(1), reply(Kind::Push, b))), 6);
        assert_eq!(t.len(), 2);
        assert_eq!(pass(t.answered(s(1), reply(Kind::SyncAck, b))), 6);
        assert_eq!(pass(t.answered(s(2), reply(Kind::Error, c))), 5);
        assert!(t.is_empty());
    }

    #[test]
    fn two_requests_with_the_same_session_and_seq_are_both_kept() {
        let mut t = InFlight::new(T);
        let a = t.written(s(1), req(Kind::Send, 3), 0).seq;
        let b = t.written(s(1), req(Kind::Send, 3), 0).seq;
        assert_ne!(a, b);
        assert_eq!(t.len(), 2);
        // Answered out of order, each answer ends its own request.
        assert_eq!(pass(t.answered(s(1), reply(Kind::SendAck, b))), 3);
        assert_eq!(t.len(), 1);
        let left = t.take_all();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.seq, 3);
    }

    #[test]
    fn what_is_left_comes_back_oldest_first_and_once() {
        let mut t = InFlight::new(T);
        let mut link = Vec::new();
        for (conn, seq) in [(7, 1), (3, 2), (9, 3), (3, 2), (1, 5)] {
            link.push(t.written(s(conn), req(Kind::Send, seq), 0).seq);
        }
        t.answered(s(9), reply(Kind::SendAck, link[2]));
        let left: Vec<(u64, u32)> = t
            .take_all()
            .into_iter()
            .map(|(s, f)| (s.conn, f.seq))
            .collect();
        assert_eq!(left, vec![(7, 1), (3, 2), (3, 2), (1, 5)]);
        assert!(t.take_all().is_empty());
    }

    #[test]
    fn a_request_is_due_after_the_timeout_and_its_late_answer_is_dropped() {
        let mut t = InFlight::new(100);
        let a = t.written(s(1), req(Kind::Send, 4), 10).seq;
        let b = t.written(s(2), req(Kind::Leave, 9), 50).seq;
        assert_eq!(t.next_due(), Some(110));
        let mut due = Vec::new();
        t.expire(109, &mut due);
        assert!(due.is_empty());
        t.expire(110, &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1.seq), (s(1), 4));
        assert_eq!(t.next_due(), Some(150));
        // Its answer comes after all: the client has had UNAVAILABLE.
        assert_eq!(
            t.answered(s(1), reply(Kind::SendAck, a)),
            Answer::Late(reply(Kind::SendAck, a))
        );
        // The other is answered in time: nothing is due any more.
        assert_eq!(pass(t.answered(s(2), reply(Kind::LeaveAck, b))), 9);
        assert_eq!(t.next_due(), None);
        due.clear();
        t.expire(u64::MAX, &mut due);
        assert!(due.is_empty());
    }

    #[test]
    fn another_sessions_answer_with_a_link_seq_is_not_this_requests() {
        let mut t = InFlight::new(T);
        let a = t.written(s(1), req(Kind::Leave, 9), 0).seq;
        let later = SessionRef { conn: 1, epoch: 2 };
        assert!(matches!(
            t.answered(later, reply(Kind::LeaveAck, a)),
            Answer::Late(_)
        ));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn only_requests_that_get_answers_are_kept_and_others_keep_their_seq() {
        let mut t = InFlight::new(T);
        assert_eq!(t.written(s(1), req(Kind::Heartbeat, 1), 0).seq, 1);
        assert_eq!(t.written(s(1), req(Kind::Login, 2), 0).seq, 2);
        assert!(t.is_empty());
    }

    #[test]
    fn link_seqs_skip_0_and_those_in_flight_when_they_wrap() {
        let mut t = InFlight::new(T);
        t.last_seq = u32::MAX - 2;
        let held = t.written(s(1), req(Kind::Send, 1), 0).seq; // MAX - 1
        t.last_seq = u32::MAX - 2;
        let seqs: Vec<u32> = (0..3)
            .map(|_| t.written(s(1), req(Kind::Send, 1), 0).seq)
            .collect();
        assert_eq!(held, u32::MAX - 1);
        assert_eq!(seqs, [u32::MAX, 1, 2]);
    }

    #[test]
    fn answered_entries_do_not_pile_up_in_the_due_order() {
        let mut t = InFlight::new(T);
        for i in 0..100_000u64 {
            let seq = t.written(s(1), req(Kind::Send, 1), i).seq;
            t.answered(s(1), reply(Kind::SendAck, seq));
        }
        assert!(t.is_empty());
        assert!(t.order.len() <= 2048, "{}", t.order.len());
    }
}
