//! The node's local session table and the bus thread: one subscriber
//! connection to `mg:bus`, turning each stored message into `Deliver`s for
//! this node's own sessions, in arrival order (which is `msg_id` order per
//! channel: the SEND script publishes as it numbers), and each displaced
//! session announced by another node into a `Kick` on our link.
//!
//! Gaps: the thread remembers, per channel, the newest id it delivered; a
//! publication further ahead (or a reconnect of the subscriber, after
//! which publications may have been missed) makes it read the missing
//! messages back with `RANGE` and deliver them first, in order (the
//! catch-up PROTOCOL.md rule 8 allows; clients discard repeats).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use proto::link::{self, SessionRef};

use super::conn::{Conn, RECONNECT_EVERY};
use super::read::{push_frame, range_cmd, read_range};
use super::scripts::{BUS, parse_record, user_sessions};
use crate::channel::{ChannelKind, kind_of};
use crate::worker::IoSender;

/// One of this node's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSess {
    pub device: u32,
    pub gw: u64,
    pub session: SessionRef,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<u64, Vec<LocalSess>>,
    rooms: HashMap<u64, HashSet<u64>>,
    room_users: HashMap<u64, HashSet<u64>>,
}

/// The sessions whose gateways are linked to this node, and their rooms
/// (shared by the workers, which change it, and the bus thread).
#[derive(Debug, Default)]
pub struct Local {
    t: Mutex<Table>,
}

impl Local {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.t.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `s` is now the session of (`uin`, `s.device`) here; `rooms` are the
    /// user's rooms (read with the route).
    pub fn open(&self, uin: u64, s: LocalSess, rooms: Vec<u64>) {
        let mut t = self.lock();
        let list = t.sessions.entry(uin).or_default();
        list.retain(|x| x.device != s.device);
        list.push(s);
        let set: HashSet<u64> = rooms.into_iter().collect();
        for r in &set {
            t.room_users.entry(*r).or_default().insert(uin);
        }
        t.rooms.insert(uin, set);
    }

    /// Removes the session if it is still the one of (`uin`, `device`).
    pub fn close(&self, uin: u64, device: u32, gw: u64, session: SessionRef) -> bool {
        let mut t = self.lock();
        let Some(list) = t.sessions.get_mut(&uin) else {
            return false;
        };
        let before = list.len();
        list.retain(|x| !(x.device == device && x.gw == gw && x.session == session));
        let removed = list.len() != before;
        if list.is_empty() {
            t.sessions.remove(&uin);
            if let Some(rooms) = t.rooms.remove(&uin) {
                for r in rooms {
                    if let Some(u) = t.room_users.get_mut(&r) {
                        u.remove(&uin);
                        if u.is_empty() {
                            t.room_users.remove(&r);
                        }
                    }
                }
            }
        }
        removed
    }

    /// Every session of gateway `gw`, removed.
    pub fn gateway_down(&self, gw: u64) -> Vec<(u64, LocalSess)> {
        let gone: Vec<(u64, LocalSess)> = {
            let t = self.lock();
            t.sessions
                .iter()
                .flat_map(|(u, l)| l.iter().filter(|s| s.gw == gw).map(|s| (*u, *s)))
                .collect()
        };
        for (u, s) in &gone {
            self.close(*u, s.device, s.gw, s.session);
        }
        gone
    }

    /// `uin` (online here) joined or left `room`.
    pub fn membership(&self, uin: u64, room: u64, joined: bool) {
        let mut t = self.lock();
        let Some(rooms) = t.rooms.get_mut(&uin) else {
            return;
        };
        if joined {
            rooms.insert(room);
            t.room_users.entry(room).or_default().insert(uin);
        } else {
            rooms.remove(&room);
            if let Some(u) = t.room_users.get_mut(&room) {
                u.remove(&uin);
                if u.is_empty() {
                    t.room_users.remove(&room);
                }
            }
        }
    }

    /// The local sessions that receive channel `ch`'s messages.
    pub fn recipients(&self, ch: u64) -> Vec<LocalSess> {
        let t = self.lock();
        let users: Vec<u64> = match kind_of(ch) {
            ChannelKind::Inbox(u) => vec![u],
            ChannelKind::Room => t
                .room_users
                .get(&ch)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            ChannelKind::Invalid => Vec::new(),
        };
        users
            .iter()
            .filter_map(|u| t.sessions.get(u))
            .flatten()
            .copied()
            .collect()
    }

    /// Every session held here.
    pub fn all(&self) -> Vec<(u64, LocalSess)> {
        let t = self.lock();
        t.sessions
            .iter()
            .flat_map(|(u, l)| l.iter().map(|s| (*u, *s)))
            .collect()
    }

    /// Channels with a local recipient (for the catch-up).
    pub fn channels(&self) -> Vec<u64> {
        let t = self.lock();
        let mut v: Vec<u64> = t.room_users.keys().copied().collect();
        v.extend(t.sessions.keys().map(|u| crate::channel::inbox_of(*u)));
        v
    }
}

/// Appends `Deliver`s of `frame` to `to`, one per gateway.
pub fn deliver(io: &mut Vec<(u64, BytesMut)>, to: &[LocalSess], frame: &Bytes) {
    let mut by_gw: HashMap<u64, Vec<SessionRef>> = HashMap::new();
    for s in to {
        by_gw.entry(s.gw).or_default().push(s.session);
    }
    for (gw, targets) in by_gw {
        let i = match io.iter().position(|(g, _)| *g == gw) {
            Some(i) => i,
            None => {
                io.push((gw, BytesMut::new()));
                io.len() - 1
            }
        };
        for chunk in targets.chunks(link::MAX_DELIVER_TARGETS) {
            link::encode_deliver(&mut io[i].1, chunk, frame);
        }
    }
}

/// Slack for the sending nodes' clocks when catching up by time.
const CATCH_UP_SKEW_MS: u64 = 2_000;

/// What the bus thread needs.
#[derive(Debug)]
pub struct Bus {
    pub client: redis::Client,
    pub timeout: Duration,
    pub node: u64,
    pub local: Arc<Local>,
    pub io: IoSender,
    pub reader: Conn,
    pub max_age_ms: u64,
    pub stop: Arc<AtomicBool>,
}

impl Bus {
    /// A connection for the subscriber (not yet subscribed).
    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(self.timeout)?;
        con.set_write_timeout(Some(self.timeout))?;
        con.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(con)
    }

    /// The bus thread's loop: subscribe, deliver, re-subscribe after a
    /// drop (catching up). The first subscription's outcome goes to
    /// `ready`, so that the node starts only once it hears the bus.
    pub fn run(mut self, ready: Sender<redis::RedisResult<()>>) {
        let mut delivered: HashMap<u64, u64> = HashMap::new();
        let mut ready = Some(ready);
        let mut again = false;
        // When the subscription was lost (for the catch-up of channels
        // that had delivered nothing yet).
        let mut lost_at = crate::worker::now_ms();
        while !self.stop.load(Ordering::Acquire) {
            let mut con = match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return;
                    }
                    std::thread::sleep(RECONNECT_EVERY);
                    continue;
                }
            };
            // The PubSub lives as long as the subscription: dropping it
            // unsubscribes.
            let mut ps = con.as_pubsub();
            if let Err(e) = ps.subscribe(BUS) {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                drop(ps);
                std::thread::sleep(RECONNECT_EVERY);
                continue;
            }
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            if again {
                tracing::info!("bus re-subscribed: catching up");
                self.verify_sessions();
                for ch in self.local.channels() {
                    let last = delivered.get(&ch).copied();
                    let since = lost_at.saturating_sub(CATCH_UP_SKEW_MS);
                    self.catch_up(ch, last, since, u64::MAX, &mut delivered);
                }
            }
            again = true;
            while !self.stop.load(Ordering::Acquire) {
                match ps.get_message() {
                    Ok(m) => self.handle(m.get_payload_bytes(), &mut delivered),
                    Err(e) if e.is_timeout() => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "bus connection lost");
                        lost_at = crate::worker::now_ms();
                        break;
                    }
                }
            }
        }
    }

    fn handle(&mut self, p: &[u8], delivered: &mut HashMap<u64, u64>) {
        match p.first() {
            Some(b'm') => {
                let Some((ch, id, push)) = parse_message(&p[1..]) else {
                    tracing::warn!("malformed bus message");
                    return;
                };
                let to = self.local.recipients(ch);
                if to.is_empty() {
                    delivered.remove(&ch);
                    return;
                }
                if let Some(&last) = delivered.get(&ch) {
                    if id <= last {
                        return;
                    }
                    if id > last + 1 {
                        self.catch_up(ch, Some(last), 0, id - 1, delivered);
                    }
                }
                let Some(frame) = push_frame(push, id) else {
                    return;
                };
                let mut io = Vec::new();
                deliver(&mut io, &to, &frame);
                self.send(io);
                delivered.insert(ch, id);
            }
            Some(b'k') => self.kick(&p[1..]),
            _ => {}
        }
    }

    /// Delivers channel `ch`'s retained messages up to `upto`: those after
    /// `after` (the newest delivered live), or, when nothing was delivered
    /// yet, those sent since `since_ms` (by their `sent_at_ms`).
    fn catch_up(
        &mut self,
        ch: u64,
        after: Option<u64>,
        since_ms: u64,
        upto: u64,
        delivered: &mut HashMap<u64, u64>,
    ) {
        let Ok(mut r) = self
            .reader
            .pipeline(&[range_cmd(ch, Some(after.unwrap_or(0)))])
        else {
            return;
        };
        let Some(Ok(v)) = r.pop() else { return };
        let Some(range) = read_range(v, self.max_age_ms) else {
            return;
        };
        let to = self.local.recipients(ch);
        let mut io = Vec::new();
        let mut last = after.unwrap_or(0);
        for (id, at, frame) in range.frames {
            if id > upto {
                break;
            }
            if after.is_some() || at >= since_ms {
                deliver(&mut io, &to, &frame);
            }
            last = id;
        }
        self.send(io);
        if after.is_some() || last > 0 {
            delivered.insert(ch, last.max(after.unwrap_or(0)));
        }
    }

    /// After a lost subscription, kicks that went by unheard: every local
    /// session whose router record now names another session is kicked.
    fn verify_sessions(&mut self) {
        let all = self.local.all();
        let cmds: Vec<redis::Cmd> = all
            .iter()
            .map(|(u, s)| {
                let mut c = redis::cmd("HGET");
                c.arg(user_sessions(*u)).arg(s.device);
                c
            })
            .collect();
        let Ok(recs) = self.reader.pipeline(&cmds) else {
            return;
        };
        let mut io: Vec<(u64, BytesMut)> = Vec::new();
        for ((uin, s), r) in all.into_iter().zip(recs) {
            let Ok(redis::Value::BulkString(rec)) = r else {
                continue; // no record (lost with Redis's data): keep it.
            };
            let Some((node, gw, sess)) = parse_record(&rec) else {
                continue;
            };
            if (node, gw, sess) != (self.node, s.gw, s.session)
                && self.local.close(uin, s.device, s.gw, s.session)
            {
                let mut b = BytesMut::new();
                crate::reply::kick_duplicate(&mut b, s.session);
                io.push((s.gw, b));
            }
        }
        self.send(io);
    }

    /// `k<UIN>|<DEV>|<LOGIN20>|<NODE>|<GW>|<CONN>|<EPOCH>`: kick if the
    /// displaced session is ours (`NODE`) and still in our table (when our
    /// own worker displaced it, it already kicked it; the gateway ignores
    /// a second kick of a closed session).
    fn kick(&mut self, p: &[u8]) {
        let Ok(s) = std::str::from_utf8(p) else {
            return;
        };
        let f: Vec<&str> = s.split('|').collect();
        let [uin, dev, _login, node, gw, conn, epoch] = f[..] else {
            return;
        };
        let num = |x: &str| x.parse::<u64>().ok();
        let (Some(uin), Some(dev), Some(node), Some(gw), Some(conn), Some(epoch)) = (
            num(uin),
            num(dev),
            num(node),
            num(gw),
            num(conn),
            num(epoch),
        ) else {
            return;
        };
        if node != self.node {
            return;
        }
        let session = SessionRef { conn, epoch };
        if self.local.close(uin, dev as u32, gw, session) {
            let mut b = BytesMut::new();
            crate::reply::kick_duplicate(&mut b, session);
            self.send(vec![(gw, b)]);
        }
    }

    fn send(&self, io: Vec<(u64, BytesMut)>) {
        if io.is_empty() {
            return;
        }
        let batch = io.into_iter().map(|(g, b)| (g, b.freeze())).collect();
        if self.io.tx.send(batch).is_ok() {
            let _ = self.io.waker.wake();
        }
    }
}

/// `<CH>:<ID>:<push>` -> (channel, id, push bytes).
fn parse_message(p: &[u8]) -> Option<(u64, u64, &[u8])> {
    let a = p.iter().position(|&b| b == b':')?;
    let rest = &p[a + 1..];
    let b = rest.iter().position(|&b| b == b':')?;
    let ch = std::str::from_utf8(&p[..a]).ok()?.parse().ok()?;
    let id = std::str::from_utf8(&rest[..b]).ok()?.parse().ok()?;
    Some((ch, id, &rest[b + 1..]))
}
