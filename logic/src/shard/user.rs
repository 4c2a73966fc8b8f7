//! The user role of a shard: session notices (router, duplicate-login
//! kicks, presence copies for channel shards), client frames (decoding,
//! validation, dedup, membership, forwarding to the channel's shard) and
//! the gathering of SYNC parts into one SYNC_ACK.
//!
//! A user's entry is loaded from the store (its rooms) before it is used,
//! and a device's dedup state before its first SEND. JOIN and LEAVE are
//! stored here, both directions in this shard's batch, before the
//! channel's shard hears of them.

use bytes::{Bytes, BytesMut};
use proto::codec::Kind;
use proto::link::{LinkMsg, SessionRef};
use proto::pb::{self, Status};

use super::{PendingSync, Shard, ShardMsg, shard_of_channel, shard_of_uin};
use crate::channel::{ChannelKind, inbox_of, kind_of};
use crate::dedup::{Outcome, Verdict};
use crate::forwarded::{self, LogicRequest};
use crate::reply::{self, Origin};
use crate::router::{Opened, Sess};
use crate::store::Op;

impl Shard {
    pub(super) fn link(&mut self, gw: u64, msg: LinkMsg, out: &mut super::Outbox) {
        match msg {
            LinkMsg::Open {
                session,
                uin,
                device,
                login_ms,
            } => {
                let sess = Sess {
                    gw,
                    session,
                    device,
                    login_ms,
                };
                if self.load_user(uin) {
                    let opened = self.router.open(uin, sess);
                    self.opened(uin, opened, out);
                }
            }
            LinkMsg::Reopen {
                session,
                uin,
                device,
                login_ms,
            } => {
                let sess = Sess {
                    gw,
                    session,
                    device,
                    login_ms,
                };
                if self.load_user(uin) {
                    let opened = self.router.reopen(uin, sess);
                    self.opened(uin, opened, out);
                }
            }
            LinkMsg::Close {
                session,
                uin,
                device,
            } if self.router.close(
                uin,
                Sess {
                    gw,
                    session,
                    device,
                    login_ms: 0,
                },
            ) =>
            {
                self.publish_presence(uin, out)
            }
            LinkMsg::Client {
                session,
                uin,
                device,
                frame,
            } => self.client(gw, session, uin, device, frame, out),
            // A stale Close, or a kind the network thread never routes here.
            _ => {}
        }
    }

    fn opened(&mut self, uin: u64, opened: Opened, out: &mut super::Outbox) {
        match opened {
            Opened::New => self.publish_presence(uin, out),
            Opened::Unchanged => {}
            Opened::Replaced(old) => {
                reply::kick_duplicate(out.io(old.gw), old.session);
                self.publish_presence(uin, out);
            }
            Opened::Stale(s) => reply::kick_duplicate(out.io(s.gw), s.session),
        }
    }

    /// Sends `uin`'s current sessions, with the rooms each shard hosts,
    /// to every other shard hosting one of its rooms, and marks it online
    /// or offline in the rooms hosted here.
    pub(super) fn publish_presence(&mut self, uin: u64, out: &mut super::Outbox) {
        let sessions = self.router.sessions(uin).to_vec();
        let online = !sessions.is_empty();
        let n = self.cfg.shards;
        let mut per_shard: Vec<Vec<u64>> = vec![Vec::new(); n];
        for r in self.router.rooms(uin) {
            per_shard[shard_of_channel(r, n)].push(r);
        }
        for (t, rooms) in per_shard.into_iter().enumerate() {
            if t == self.me {
                for r in rooms {
                    self.online.mark(r, uin, online);
                }
            } else if !rooms.is_empty() {
                let msg = ShardMsg::Presence {
                    uin,
                    sessions: sessions.clone(),
                    rooms,
                };
                out.send(t, msg);
            }
        }
        if !online {
            self.idle_users.push(uin);
        }
    }

    fn client(
        &mut self,
        gw: u64,
        session: SessionRef,
        uin: u64,
        device: u32,
        frame: Bytes,
        out: &mut super::Outbox,
    ) {
        let (seq, request) = match forwarded::parse(&frame, self.cfg.max_client_body) {
            Ok(r) => r,
            Err(r) => return reply::terminate(out.io(gw), session, r.seq, r.code, &r.why),
        };
        let origin = Origin {
            gw,
            session,
            uin,
            device,
            seq,
        };
        match request {
            LogicRequest::Send(m) => self.send(origin, m, out),
            LogicRequest::Sync(m) => self.sync(origin, m, out),
            LogicRequest::Join(ch) => self.join(origin, ch, out),
            LogicRequest::Leave(ch) => self.leave(origin, ch, out),
        }
    }

    fn send(&mut self, o: Origin, req: pb::SendReq, out: &mut super::Outbox) {
        let (ch, cmid) = (req.channel, req.client_msg_id);
        let kind = kind_of(ch);
        if kind == ChannelKind::Invalid {
            reply::send_ack(out.io(o.gw), &o, Status::Invalid, ch, 0, cmid);
            return;
        }
        if req.body.len() > self.cfg.max_send_body {
            reply::send_ack(out.io(o.gw), &o, Status::TooLarge, ch, 0, cmid);
            return;
        }
        if !self.load_user(o.uin) || !self.load_dedup(o.uin, o.device) {
            return;
        }
        match self.dedup.check(o.uin, o.device, cmid, (o, ch)) {
            Verdict::Duplicate { msg_id } => {
                self.counters.duplicates += 1;
                reply::send_ack(out.io(o.gw), &o, Status::Duplicate, ch, msg_id, cmid);
            }
            Verdict::Parked => {}
            Verdict::Proceed => {
                if kind == ChannelKind::Room && !self.router.is_member(o.uin, ch) {
                    let done = self.dedup.finish(
                        o.uin,
                        o.device,
                        cmid,
                        &Outcome::Refused(Status::NotMember),
                    );
                    debug_assert!(done.is_empty());
                    reply::send_ack(out.io(o.gw), &o, Status::NotMember, ch, 0, cmid);
                    return;
                }
                // Detach the body from the link receive buffer: it lives on
                // in the store (as part of the PUSH frame) only.
                let body = Bytes::copy_from_slice(&req.body);
                let msg = ShardMsg::Send {
                    origin: o,
                    channel: ch,
                    cmid,
                    body,
                };
                out.send(shard_of_channel(ch, self.cfg.shards), msg);
            }
        }
    }

    pub(super) fn send_done(
        &mut self,
        o: Origin,
        cmid: u64,
        result: Result<u64, Status>,
        out: &mut super::Outbox,
    ) {
        let outcome = match result {
            Ok(msg_id) => Outcome::Stored { msg_id },
            Err(status) => Outcome::Refused(status),
        };
        for (c, (w, ch)) in self.dedup.finish(o.uin, o.device, cmid, &outcome) {
            let buf: &mut BytesMut = out.io(w.gw);
            match outcome {
                Outcome::Stored { msg_id } => {
                    self.counters.duplicates += 1;
                    let id = if c == cmid { msg_id } else { 0 };
                    reply::send_ack(buf, &w, Status::Duplicate, ch, id, c);
                }
                Outcome::Refused(status) => reply::send_ack(buf, &w, status, ch, 0, c),
            }
        }
    }

    /// Loads the dedup state of (`uin`, `device`) if needed.
    fn load_dedup(&mut self, uin: u64, device: u32) -> bool {
        if self.dedup.has(uin, device) {
            return true;
        }
        match self.store.dedup(uin, device) {
            Ok(rec) => {
                self.counters.loads += 1;
                self.dedup.seed(uin, device, rec);
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn join(&mut self, o: Origin, ch: u64, out: &mut super::Outbox) {
        match kind_of(ch) {
            ChannelKind::Invalid => reply::join_ack(out.io(o.gw), &o, Status::Invalid, ch, 0),
            ChannelKind::Inbox(_) => reply::join_ack(out.io(o.gw), &o, Status::NotMember, ch, 0),
            ChannelKind::Room => {
                if !self.load_user(o.uin) {
                    return;
                }
                if !self.router.is_member(o.uin, ch) {
                    if self.router.room_count(o.uin) >= self.cfg.max_rooms_per_user {
                        reply::join_ack(out.io(o.gw), &o, Status::TooLarge, ch, 0);
                        return;
                    }
                    let _ = self.router.join(o.uin, ch);
                    out.batch.push(Op::Join {
                        uin: o.uin,
                        room: ch,
                    });
                }
                let t = shard_of_channel(ch, self.cfg.shards);
                let sessions = if t == self.me {
                    Vec::new()
                } else {
                    self.router.sessions(o.uin).to_vec()
                };
                let msg = ShardMsg::Join {
                    origin: o,
                    channel: ch,
                    sessions,
                };
                out.send(t, msg);
            }
        }
    }

    fn leave(&mut self, o: Origin, ch: u64, out: &mut super::Outbox) {
        match kind_of(ch) {
            ChannelKind::Invalid => reply::leave_ack(out.io(o.gw), &o, Status::Invalid, ch),
            ChannelKind::Inbox(_) => reply::leave_ack(out.io(o.gw), &o, Status::NotMember, ch),
            ChannelKind::Room => {
                if !self.load_user(o.uin) {
                    return;
                }
                if !self.router.leave(o.uin, ch) {
                    reply::leave_ack(out.io(o.gw), &o, Status::NotMember, ch);
                    return;
                }
                out.batch.push(Op::Leave {
                    uin: o.uin,
                    room: ch,
                });
                let msg = ShardMsg::Leave {
                    origin: o,
                    channel: ch,
                };
                out.send(shard_of_channel(ch, self.cfg.shards), msg);
            }
        }
    }

    fn sync(&mut self, o: Origin, req: pb::SyncReq, out: &mut super::Outbox) {
        if !self.load_user(o.uin) {
            return;
        }
        self.counters.syncs += 1;
        let n = self.cfg.shards;
        let mut parts: Vec<Vec<(u64, Option<u64>)>> = vec![Vec::new(); n];
        let inbox = inbox_of(o.uin);
        let listed = |ch: u64| {
            req.heads
                .iter()
                .rev()
                .find(|h| h.channel == ch)
                .map(|h| h.msg_id)
        };
        for ch in self.router.rooms(o.uin).chain(std::iter::once(inbox)) {
            parts[shard_of_channel(ch, n)].push((ch, listed(ch)));
        }
        let id = self.next_sync;
        self.next_sync += 1;
        let remaining = parts.iter().filter(|p| !p.is_empty()).count();
        let pending = PendingSync {
            origin: o,
            remaining,
            heads: Vec::new(),
        };
        self.syncs.insert(id, pending);
        for (t, items) in parts.into_iter().enumerate() {
            if !items.is_empty() {
                out.send(
                    t,
                    ShardMsg::SyncPart {
                        origin: o,
                        req: id,
                        items,
                    },
                );
            }
        }
    }

    pub(super) fn sync_done(
        &mut self,
        uin: u64,
        req: u64,
        heads: Vec<(u64, u64)>,
        out: &mut super::Outbox,
    ) {
        debug_assert_eq!(shard_of_uin(uin, self.cfg.shards), self.me);
        let Some(p) = self.syncs.get_mut(&req) else {
            return;
        };
        p.heads.extend(heads);
        p.remaining -= 1;
        if p.remaining > 0 {
            return;
        }
        let Some(mut p) = self.syncs.remove(&req) else {
            return;
        };
        p.heads.sort_unstable();
        let ack = pb::SyncAck {
            heads: p
                .heads
                .iter()
                .map(|&(channel, msg_id)| pb::ChannelHead { channel, msg_id })
                .collect(),
        };
        reply::reply(out.io(p.origin.gw), &p.origin, Kind::SyncAck, &ack);
    }
}
