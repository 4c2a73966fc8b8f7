//! The channel role of a shard: storing a SEND (next `msg_id`, retained
//! PUSH frame, SEND_ACK), fanning the PUSH out (one `Deliver` per gateway
//! holding recipients, the frame encoded once), room JOIN/LEAVE, and the
//! PUSHes and heads of a SYNC part.
//!
//! Every PUSH of a channel is produced here, in `msg_id` order, into this
//! shard's one ordered output path per gateway (PROTOCOL.md rule 8).

use bytes::Bytes;
use proto::link::{self, MAX_DELIVER_TARGETS, SessionRef};
use proto::pb::Status;

use super::{Outbox, Shard, ShardMsg, shard_of_uin};
use crate::channel::{ChannelKind, kind_of};
use crate::reply::{self, Origin};

impl Shard {
    pub(super) fn store(
        &mut self,
        now_ms: u64,
        o: Origin,
        ch: u64,
        cmid: u64,
        body: Bytes,
        out: &mut Outbox,
    ) {
        let (me, n, ret) = (self.me, self.cfg.shards, self.cfg.retention);
        let kind = kind_of(ch);
        let channel = self.channels.entry(ch).or_default();
        let done_to = shard_of_uin(o.uin, n);
        if kind == ChannelKind::Room && !channel.is_member(o.uin) {
            reply::send_ack(out.io(o.gw), &o, Status::NotMember, ch, 0, cmid);
            let done = ShardMsg::SendDone {
                origin: o,
                cmid,
                result: Err(Status::NotMember),
            };
            out.send(done_to, done);
            return;
        }
        let (msg_id, frame) = channel.append(now_ms, ret, |id| {
            reply::push_frame(ch, id, &o, now_ms, body)
        });
        self.counters.stored += 1;
        reply::send_ack(out.io(o.gw), &o, Status::Ok, ch, msg_id, cmid);

        // Group the recipients' sessions by gateway.
        let mut by_gw: Vec<(u64, Vec<SessionRef>)> = Vec::new();
        let mut add = |uin: u64| {
            for s in Shard::sessions_of(me, n, &self.router, &self.presence, uin) {
                match by_gw.iter_mut().find(|(g, _)| *g == s.gw) {
                    Some((_, v)) => v.push(s.session),
                    None => by_gw.push((s.gw, vec![s.session])),
                }
            }
        };
        match kind {
            ChannelKind::Inbox(owner) => add(owner),
            _ => channel.online_members().for_each(&mut add),
        }
        for (gw, targets) in by_gw {
            self.counters.pushes += targets.len() as u64;
            let buf = out.io(gw);
            for chunk in targets.chunks(MAX_DELIVER_TARGETS) {
                link::encode_deliver(buf, chunk, &frame);
            }
        }
        let done = ShardMsg::SendDone {
            origin: o,
            cmid,
            result: Ok(msg_id),
        };
        out.send(done_to, done);
    }

    pub(super) fn join_here(&mut self, o: Origin, ch: u64, out: &mut Outbox) {
        let sessions = Shard::sessions_of(
            self.me,
            self.cfg.shards,
            &self.router,
            &self.presence,
            o.uin,
        );
        let online = !sessions.is_empty();
        let channel = self.channels.entry(ch).or_default();
        if channel.join(o.uin, online) {
            self.local_rooms.entry(o.uin).or_default().push(ch);
        }
        reply::join_ack(out.io(o.gw), &o, Status::Ok, ch, channel.newest());
    }

    pub(super) fn leave_here(&mut self, o: Origin, ch: u64, out: &mut Outbox) {
        if let Some(channel) = self.channels.get_mut(&ch)
            && channel.leave(o.uin)
            && let Some(rooms) = self.local_rooms.get_mut(&o.uin)
        {
            rooms.retain(|&r| r != ch);
            if rooms.is_empty() {
                self.local_rooms.remove(&o.uin);
            }
        }
        reply::leave_ack(out.io(o.gw), &o, Status::Ok, ch);
    }

    pub(super) fn sync_part(
        &mut self,
        now_ms: u64,
        o: Origin,
        req: u64,
        items: Vec<(u64, Option<u64>)>,
        out: &mut Outbox,
    ) {
        let ret = self.cfg.retention;
        let mut heads = Vec::with_capacity(items.len());
        for (ch, head) in items {
            let Some(channel) = self.channels.get_mut(&ch) else {
                heads.push((ch, 0));
                continue;
            };
            if let Some(head) = head {
                let buf = out.io(o.gw);
                for m in channel.since(head, now_ms, ret) {
                    link::encode_deliver(buf, &[o.session], &m.frame);
                    self.counters.pushes += 1;
                }
            }
            heads.push((ch, channel.newest()));
        }
        let done = ShardMsg::SyncDone {
            uin: o.uin,
            req,
            heads,
        };
        out.send(shard_of_uin(o.uin, self.cfg.shards), done);
    }
}
