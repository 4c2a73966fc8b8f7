//! The client requests a worker answers through Redis: SEND (three
//! pipelines per group of SENDs, see `logic/REDIS.md` "Rule 7"), SYNC,
//! JOIN and LEAVE.

use std::collections::HashMap;

use prost::Message;
use proto::codec::Kind;
use proto::pb::{self, Status, error::ErrorCode};
use redis::{RedisResult, Value};

use super::super::read::{as_u64, range_cmd, read_range};
use super::super::scripts::{self as k, chan_keys, evalsha, pad20};
use super::{Send, Worker};
use crate::channel::{ChannelKind, inbox_of, kind_of};
use crate::reply;
use crate::worker::now_ms;

/// What step 1 (the device's latest) decided.
enum Check {
    Duplicate(u64),
    Proceed,
}

/// `CMID20:MSGID` -> (cmid, msg_id).
pub(super) fn decode_latest(v: &Value) -> Option<(u64, u64)> {
    let Value::BulkString(b) = v else { return None };
    let s = std::str::from_utf8(b).ok()?;
    let (c, id) = s.split_once(':')?;
    Some((c.parse().ok()?, id.parse().ok()?))
}

impl Worker {
    /// Answers every SEND gathered so far.
    pub(super) fn run_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        let sends = std::mem::take(&mut self.sends);
        // 1. The device's latest.
        let cmds: Vec<redis::Cmd> = sends
            .iter()
            .map(|s| {
                let mut c = redis::cmd("HGET");
                c.arg(k::user_dedup(s.o.uin)).arg(s.o.device);
                c
            })
            .collect();
        let Ok(latest) = self.conn.pipeline(&cmds) else {
            return self.unavailable(&sends);
        };
        let mut go: Vec<&Send> = Vec::new();
        for (s, r) in sends.iter().zip(latest) {
            let check = match r {
                Ok(Value::Nil) => Check::Proceed,
                Ok(v) => match decode_latest(&v) {
                    Some((c, id)) if c == s.cmid => Check::Duplicate(id),
                    Some((c, _)) if c > s.cmid => Check::Duplicate(0),
                    _ => Check::Proceed,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "dedup read failed");
                    self.ack(s, Status::Unavailable, 0);
                    continue;
                }
            };
            match check {
                Check::Duplicate(id) => self.ack(s, Status::Duplicate, id),
                Check::Proceed => go.push(s),
            }
        }
        // 2. Store (numbered, retained, published) in the channel's slot.
        let now = now_ms();
        let max = self.cfg.retention_count.to_string();
        let ttl = self.cfg.retention_ms.max(1).to_string();
        let cmds: Vec<redis::Cmd> = go
            .iter()
            .map(|s| {
                let push = pb::Push {
                    channel: s.ch,
                    msg_id: 0,
                    from_uin: s.o.uin,
                    from_device: s.o.device,
                    sent_at_ms: now,
                    body: s.body.clone(),
                }
                .encode_to_vec();
                let [n, l, m, d] = chan_keys(s.ch);
                let dev = format!("{}:{}", s.o.uin, s.o.device);
                let room = if kind_of(s.ch) == ChannelKind::Room {
                    "1"
                } else {
                    "0"
                };
                evalsha(
                    &self.scripts.send,
                    &[&n, &l, &m, &d],
                    &[
                        s.o.uin.to_string().as_bytes(),
                        dev.as_bytes(),
                        pad20(s.cmid).as_bytes(),
                        &push,
                        max.as_bytes(),
                        ttl.as_bytes(),
                        room.as_bytes(),
                        s.ch.to_string().as_bytes(),
                    ],
                )
            })
            .collect();
        let Ok(stored) = self.conn.pipeline(&cmds) else {
            let go: Vec<Send> = go.into_iter().map(clone_send).collect();
            return self.unavailable(&go);
        };
        // 3. Raise the devices' latest (best effort: the channel record
        // covers a retry if this is lost).
        let mut commits = Vec::new();
        for (s, r) in go.iter().zip(stored) {
            match script_pair(r) {
                Some((0, id)) => {
                    self.ack(s, Status::Ok, id);
                    commits.push(self.commit(s, id));
                }
                Some((1, id)) => {
                    self.ack(s, Status::Duplicate, id);
                    commits.push(self.commit(s, id));
                }
                Some((2, _)) => self.ack(s, Status::Duplicate, 0),
                Some((3, _)) => self.ack(s, Status::NotMember, 0),
                _ => self.ack(s, Status::Unavailable, 0),
            }
        }
        let _ = self.conn.pipeline(&commits);
    }

    fn commit(&self, s: &Send, id: u64) -> redis::Cmd {
        let key = k::user_dedup(s.o.uin);
        evalsha(
            &self.scripts.commit,
            &[&key],
            &[
                s.o.device.to_string().as_bytes(),
                pad20(s.cmid).as_bytes(),
                id.to_string().as_bytes(),
            ],
        )
    }

    fn ack(&mut self, s: &Send, status: Status, id: u64) {
        reply::send_ack(self.buf(s.o.gw), &s.o, status, s.ch, id, s.cmid);
    }

    fn unavailable(&mut self, sends: &[Send]) {
        for s in sends {
            self.ack(s, Status::Unavailable, 0);
        }
    }

    /// SYNC: the user's rooms, then one `RANGE` per channel.
    pub(super) fn sync(&mut self, o: reply::Origin, req: pb::SyncReq) {
        let unavailable = |w: &mut Worker| {
            let err = pb::Error {
                code: ErrorCode::Unavailable as i32,
                message: "state store unreachable".into(),
            };
            reply::reply(w.buf(o.gw), &o, Kind::Error, &err);
        };
        let mut rooms = redis::cmd("SMEMBERS");
        rooms.arg(k::user_rooms(o.uin));
        let Ok(mut r) = self.conn.pipeline(&[rooms]) else {
            return unavailable(self);
        };
        let mut channels: Vec<u64> = match r.pop() {
            Some(Ok(Value::Array(v) | Value::Set(v))) => v.into_iter().filter_map(as_u64).collect(),
            _ => return unavailable(self),
        };
        channels.sort_unstable();
        channels.push(inbox_of(o.uin));
        let listed: HashMap<u64, u64> = req.heads.iter().map(|h| (h.channel, h.msg_id)).collect();
        let cmds: Vec<redis::Cmd> = channels
            .iter()
            .map(|ch| range_cmd(*ch, listed.get(ch).copied()))
            .collect();
        let Ok(ranges) = self.conn.pipeline(&cmds) else {
            return unavailable(self);
        };
        let mut heads = Vec::with_capacity(channels.len());
        let mut pushes = Vec::new();
        for (ch, r) in channels.iter().zip(ranges) {
            let Some(range) = r.ok().and_then(|v| read_range(v, self.cfg.retention_ms)) else {
                return unavailable(self);
            };
            heads.push(pb::ChannelHead {
                channel: *ch,
                msg_id: range.head,
            });
            pushes.extend(range.frames);
        }
        let buf = self.buf(o.gw);
        for (_, _, frame) in pushes {
            proto::link::encode_deliver(buf, &[o.session], &frame);
        }
        reply::reply(buf, &o, Kind::SyncAck, &pb::SyncAck { heads });
    }

    /// JOIN: the user's index (with the room cap) first, then the room's
    /// member set, then the head.
    pub(super) fn join(&mut self, o: reply::Origin, ch: u64) {
        match kind_of(ch) {
            ChannelKind::Invalid => {
                return reply::join_ack(self.buf(o.gw), &o, Status::Invalid, ch, 0);
            }
            ChannelKind::Inbox(_) => {
                return reply::join_ack(self.buf(o.gw), &o, Status::NotMember, ch, 0);
            }
            ChannelKind::Room => {}
        }
        let key = k::user_rooms(o.uin);
        let cap = self.cfg.max_rooms_per_user.to_string();
        let join = evalsha(
            &self.scripts.join,
            &[&key],
            &[ch.to_string().as_bytes(), cap.as_bytes()],
        );
        let code = match self.conn.pipeline(&[join]).map(|mut v| v.pop()) {
            Ok(Some(Ok(v))) => as_u64(v),
            _ => None,
        };
        match code {
            Some(2) => return reply::join_ack(self.buf(o.gw), &o, Status::TooLarge, ch, 0),
            Some(0 | 1) => {}
            _ => return reply::join_ack(self.buf(o.gw), &o, Status::Unavailable, ch, 0),
        }
        let mut add = redis::cmd("SADD");
        add.arg(k::members(ch)).arg(o.uin);
        let mut head = redis::cmd("GET");
        head.arg(k::counter(ch));
        let head = match self.conn.pipeline(&[add, head]) {
            Ok(v) if v.iter().all(RedisResult::is_ok) => v
                .into_iter()
                .next_back()
                .and_then(Result::ok)
                .map_or(
                    Some(0),
                    |v| if v == Value::Nil { Some(0) } else { as_u64(v) },
                ),
            _ => None,
        };
        match head {
            Some(h) => {
                self.local.membership(o.uin, ch, true);
                reply::join_ack(self.buf(o.gw), &o, Status::Ok, ch, h)
            }
            None => reply::join_ack(self.buf(o.gw), &o, Status::Unavailable, ch, 0),
        }
    }

    /// LEAVE: the user's index first (NOT_MEMBER if absent), then the
    /// room's member set.
    pub(super) fn leave(&mut self, o: reply::Origin, ch: u64) {
        match kind_of(ch) {
            ChannelKind::Invalid => {
                return reply::leave_ack(self.buf(o.gw), &o, Status::Invalid, ch);
            }
            ChannelKind::Inbox(_) => {
                return reply::leave_ack(self.buf(o.gw), &o, Status::NotMember, ch);
            }
            ChannelKind::Room => {}
        }
        let mut rem = redis::cmd("SREM");
        rem.arg(k::user_rooms(o.uin)).arg(ch);
        let mut rem_m = redis::cmd("SREM");
        rem_m.arg(k::members(ch)).arg(o.uin);
        let status = match self.conn.pipeline(&[rem, rem_m]) {
            Ok(v) => match v.into_iter().next() {
                Some(Ok(Value::Int(0))) => Status::NotMember,
                Some(Ok(_)) => Status::Ok,
                _ => Status::Unavailable,
            },
            Err(_) => Status::Unavailable,
        };
        if status == Status::Ok {
            self.local.membership(o.uin, ch, false);
        }
        reply::leave_ack(self.buf(o.gw), &o, status, ch);
    }
}

/// A script's `{code, id}` answer.
fn script_pair(r: RedisResult<Value>) -> Option<(u64, u64)> {
    let Ok(Value::Array(v)) = r else {
        if let Err(e) = r {
            tracing::warn!(error = %e, "SEND script failed");
        }
        return None;
    };
    let mut it = v.into_iter();
    Some((as_u64(it.next()?)?, as_u64(it.next()?)?))
}

fn clone_send(s: &Send) -> Send {
    Send {
        o: s.o,
        ch: s.ch,
        cmid: s.cmid,
        body: s.body.clone(),
    }
}
