//! The channel role of a shard: storing a SEND (next `msg_id`, the message,
//! head and this shard's dedup record of the device in this turn's batch,
//! SEND_ACK), fanning the PUSH
//! out (one `Deliver` per gateway holding online members, the frame
//! encoded once), the online side of JOIN/LEAVE, and the PUSHes and heads
//! of a SYNC part (the newest from memory, older ones from the store).
//!
//! Every PUSH of a channel is produced here, in `msg_id` order, into this
//! shard's one ordered output path per gateway (PROTOCOL.md rule 8).

use bytes::Bytes;
use proto::link::{self, MAX_DELIVER_TARGETS, SessionRef};
use proto::pb::Status;

use super::{Outbox, Shard, ShardMsg, shard_of_uin};
use crate::channel::{ChannelKind, kind_of};
use crate::reply::{self, Origin};
use crate::store::Op;

impl Shard {
    pub(super) fn store_message(
        &mut self,
        now_ms: u64,
        o: Origin,
        ch: u64,
        cmid: u64,
        body: Bytes,
        out: &mut Outbox,
    ) {
        let (me, n, ret) = (self.me, self.cfg.shards, self.cfg.retention);
        let Some(channel) = self.load_channel(ch, now_ms) else {
            return;
        };
        let a = channel.append(now_ms, ret, |id| {
            reply::push_frame(ch, id, &o, now_ms, body)
        });
        let msg_id = a.msg_id;
        out.batch.push(Op::Message {
            channel: ch,
            msg_id,
            at_ms: now_ms,
            frame: a.frame.clone(),
        });
        out.batch.push(Op::Head {
            channel: ch,
            newest: msg_id,
        });
        out.batch.push(Op::Dedup {
            uin: o.uin,
            device: o.device,
            shard: me as u16,
            cmid,
            msg_id,
        });
        self.counters.stored += 1;
        reply::send_ack(out.io(o.gw), &o, Status::Ok, ch, msg_id, cmid);

        // Group the recipients' sessions by gateway.
        let mut by_gw: Vec<(u64, Vec<SessionRef>)> = Vec::new();
        let mut add = |uin: u64| {
            for s in Shard::sessions_of(me, n, &self.router, &self.online, uin) {
                match by_gw.iter_mut().find(|(g, _)| *g == s.gw) {
                    Some((_, v)) => v.push(s.session),
                    None => by_gw.push((s.gw, vec![s.session])),
                }
            }
        };
        match kind_of(ch) {
            ChannelKind::Inbox(owner) => add(owner),
            _ => self.online.members(ch).for_each(&mut add),
        }
        for (gw, targets) in by_gw {
            self.counters.pushes += targets.len() as u64;
            let buf = out.io(gw);
            for chunk in targets.chunks(MAX_DELIVER_TARGETS) {
                link::encode_deliver(buf, chunk, &a.frame);
            }
        }
        let done = ShardMsg::SendDone {
            origin: o,
            cmid,
            result: Ok(msg_id),
        };
        out.send(shard_of_uin(o.uin, n), done);
    }

    pub(super) fn join_here(
        &mut self,
        now_ms: u64,
        o: Origin,
        ch: u64,
        sessions: Vec<crate::router::Sess>,
        out: &mut Outbox,
    ) {
        if shard_of_uin(o.uin, self.cfg.shards) == self.me {
            let online = !self.router.sessions(o.uin).is_empty();
            if online {
                self.online.mark(ch, o.uin, true);
            }
        } else {
            self.online.remote_join(o.uin, sessions, ch);
        }
        let Some(channel) = self.load_channel(ch, now_ms) else {
            return;
        };
        let newest = channel.newest();
        reply::join_ack(out.io(o.gw), &o, Status::Ok, ch, newest);
    }

    pub(super) fn leave_here(&mut self, o: Origin, ch: u64, out: &mut Outbox) {
        if shard_of_uin(o.uin, self.cfg.shards) == self.me {
            self.online.mark(ch, o.uin, false);
        } else {
            self.online.remote_leave(o.uin, ch);
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
        let oldest_ms = ret.oldest_allowed_ms(now_ms);
        let mut heads = Vec::with_capacity(items.len());
        for (ch, head) in items {
            let store = self.store.clone();
            let Some(channel) = self.load_channel(ch, now_ms) else {
                return;
            };
            channel.prune(now_ms, ret);
            let newest = channel.newest();
            heads.push((ch, newest));
            let Some(head) = head else {
                continue;
            };
            let from = head.saturating_add(1).max(ret.first_kept(newest));
            if from > newest {
                continue;
            }
            // Older than the memory tail: from the store.
            let tail_first = channel.tail_first();
            let older = if from < tail_first {
                match store.messages(ch, from, tail_first - 1) {
                    Ok(v) => v,
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            let Some(channel) = self.channels.get(&ch) else {
                continue;
            };
            let buf = out.io(o.gw);
            let mut pushes = 0;
            for frame in older
                .iter()
                .filter(|m| m.at_ms >= oldest_ms)
                .map(|m| &m.frame)
                .chain(channel.tail_from(from).map(|m| &m.frame))
            {
                link::encode_deliver(buf, &[o.session], frame);
                pushes += 1;
            }
            self.counters.pushes += pushes;
        }
        let done = ShardMsg::SyncDone {
            uin: o.uin,
            req,
            heads,
        };
        out.send(shard_of_uin(o.uin, self.cfg.shards), done);
    }
}
