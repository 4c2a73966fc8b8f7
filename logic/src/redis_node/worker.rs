//! A Redis node's worker thread: takes the link messages of the uins that
//! hash to it (from the network thread, as a shard would), answers them
//! through Redis, and hands the answers to the network thread.
//!
//! A turn takes everything queued (up to 64 batches) and handles it in
//! arrival order; consecutive SENDs are handled together, as three
//! pipelines (dedup check, the SEND script, the commit), so a busy worker
//! pays three round trips per turn, not per SEND. Any Redis failure
//! answers the requests concerned UNAVAILABLE (rule 13); an `Open` or
//! `Reopen` that met one is kept and re-applied when Redis is back.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use proto::link::{LinkMsg, SessionRef};
use proto::pb::{self, Status};
use redis::Value;

use super::bus::{Local, LocalSess};
use super::conn::Conn;
use super::read::as_u64;
use super::scripts::{self as k, Scripts, evalsha, pad20, parse_record};
use crate::channel::{ChannelKind, kind_of};
use crate::forwarded::{self, LogicRequest};
use crate::reply::{self, Origin};
use crate::shard::ShardMsg;
use crate::worker::{Input, IoSender};

/// Most queued batches handled in one turn.
const MAX_BATCHES_PER_TURN: usize = 64;
/// How often announcements that met an outage are retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Settings a worker needs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub node: u64,
    pub max_send_body: usize,
    pub max_client_body: usize,
    pub max_rooms_per_user: usize,
    pub retention_count: usize,
    pub retention_ms: u64,
}

/// A session announcement (`Open` or `Reopen`).
#[derive(Debug, Clone, Copy)]
struct Announce {
    gw: u64,
    session: SessionRef,
    uin: u64,
    device: u32,
    login_ms: u64,
    open: bool,
}

#[derive(Debug)]
struct Send {
    o: Origin,
    ch: u64,
    cmid: u64,
    body: Bytes,
}

/// One worker.
#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    conn: Conn,
    scripts: Arc<Scripts>,
    local: Arc<Local>,
    io: IoSender,
    out: Vec<(u64, BytesMut)>,
    sends: Vec<Send>,
    retry: Vec<Announce>,
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        conn: Conn,
        scripts: Arc<Scripts>,
        local: Arc<Local>,
        io: IoSender,
    ) -> Worker {
        Worker {
            cfg,
            conn,
            scripts,
            local,
            io,
            out: Vec::new(),
            sends: Vec::new(),
            retry: Vec::new(),
        }
    }

    /// The thread's loop.
    pub fn run(mut self, rx: &Receiver<Input>) {
        loop {
            let first = match rx.recv_timeout(RETRY_EVERY) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if !self.retry.is_empty() {
                for a in std::mem::take(&mut self.retry) {
                    self.announce(a);
                }
            }
            let mut next = first;
            let mut turns = 0;
            while let Some(input) = next.take() {
                match input {
                    Input::Stop => {
                        self.flush();
                        return;
                    }
                    Input::Synced(_) | Input::Written(_) => {}
                    Input::Batch(msgs) => {
                        for m in msgs {
                            self.handle(m);
                        }
                    }
                }
                turns += 1;
                if turns < MAX_BATCHES_PER_TURN {
                    next = rx.try_recv().ok();
                }
            }
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.run_sends();
        if self.out.is_empty() {
            return;
        }
        let batch = self.out.drain(..).map(|(g, b)| (g, b.freeze())).collect();
        if self.io.tx.send(batch).is_ok() {
            let _ = self.io.waker.wake();
        }
    }

    fn buf(&mut self, gw: u64) -> &mut BytesMut {
        let i = match self.out.iter().position(|(g, _)| *g == gw) {
            Some(i) => i,
            None => {
                self.out.push((gw, BytesMut::new()));
                self.out.len() - 1
            }
        };
        &mut self.out[i].1
    }

    fn handle(&mut self, m: ShardMsg) {
        let ShardMsg::Link { gw, msg } = m else {
            if let ShardMsg::GatewayDown { gw } = m {
                self.run_sends();
                self.gateway_down(gw);
            }
            return;
        };
        if let LinkMsg::Client {
            session,
            uin,
            device,
            frame,
        } = msg
        {
            return self.client(gw, session, uin, device, frame);
        }
        // Session notices keep their order with the SENDs before them.
        self.run_sends();
        match msg {
            LinkMsg::Open {
                session,
                uin,
                device,
                login_ms,
            }
            | LinkMsg::Reopen {
                session,
                uin,
                device,
                login_ms,
            } => {
                let open = matches!(msg, LinkMsg::Open { .. });
                self.announce(Announce {
                    gw,
                    session,
                    uin,
                    device,
                    login_ms,
                    open,
                });
            }
            LinkMsg::Close {
                session,
                uin,
                device,
            } => {
                self.retry
                    .retain(|a| !(a.uin == uin && a.device == device && a.session == session));
                if self.local.close(uin, device, gw, session) {
                    let _ = self
                        .conn
                        .pipeline(&[self.unroute(uin, device, gw, session)]);
                }
            }
            _ => {}
        }
    }

    fn unroute(&self, uin: u64, device: u32, gw: u64, s: SessionRef) -> redis::Cmd {
        let key = k::user_sessions(uin);
        let ident = format!("{gw}|{}|{}", s.conn, s.epoch);
        evalsha(
            &self.scripts.unroute,
            &[&key],
            &[device.to_string().as_bytes(), ident.as_bytes()],
        )
    }

    /// Rule 3 through `ROUTE`, then the user's rooms into the local table.
    fn announce(&mut self, a: Announce) {
        let key = k::user_sessions(a.uin);
        let rec = format!(
            "{}|{}|{}|{}|{}",
            pad20(a.login_ms),
            self.cfg.node,
            a.gw,
            a.session.conn,
            a.session.epoch
        );
        let route = evalsha(
            &self.scripts.route,
            &[&key],
            &[
                a.device.to_string().as_bytes(),
                rec.as_bytes(),
                if a.open { b"1" } else { b"0" },
                a.uin.to_string().as_bytes(),
            ],
        );
        let mut rooms = redis::cmd("SMEMBERS");
        rooms.arg(k::user_rooms(a.uin));
        let Ok(mut r) = self.conn.pipeline(&[route, rooms]) else {
            tracing::warn!(
                uin = a.uin,
                "redis down: session announcement kept for later"
            );
            self.retry.push(a);
            return;
        };
        let rooms = r.pop().and_then(Result::ok);
        let route = r.pop().and_then(Result::ok);
        let (Some(Value::Array(route)), Some(rooms)) = (route, rooms) else {
            self.retry.push(a);
            return;
        };
        let code = route.first().cloned().and_then(as_u64);
        let rooms: Vec<u64> = match rooms {
            Value::Array(v) | Value::Set(v) => v.into_iter().filter_map(as_u64).collect(),
            _ => Vec::new(),
        };
        let sess = LocalSess {
            device: a.device,
            gw: a.gw,
            session: a.session,
        };
        match code {
            Some(2) => reply::kick_duplicate(self.buf(a.gw), a.session),
            Some(1) => {
                // Our own displaced session is kicked here; another node's
                // hears it on the bus.
                if let Some(Value::BulkString(old)) = route.get(1)
                    && let Some((node, gw, s)) = parse_record(old)
                    && node == self.cfg.node
                {
                    self.local.close(a.uin, a.device, gw, s);
                    reply::kick_duplicate(self.buf(gw), s);
                }
                self.local.open(a.uin, sess, rooms);
            }
            _ => self.local.open(a.uin, sess, rooms),
        }
    }

    fn gateway_down(&mut self, gw: u64) {
        self.retry.retain(|a| a.gw != gw);
        let gone = self.local.gateway_down(gw);
        let cmds: Vec<redis::Cmd> = gone
            .iter()
            .map(|(u, s)| self.unroute(*u, s.device, s.gw, s.session))
            .collect();
        let _ = self.conn.pipeline(&cmds);
    }

    fn client(&mut self, gw: u64, session: SessionRef, uin: u64, device: u32, frame: Bytes) {
        let (seq, request) = match forwarded::parse(&frame, self.cfg.max_client_body) {
            Ok(r) => r,
            Err(r) => {
                // The session's SENDs gathered this turn are answered
                // before the ERROR that ends it.
                self.run_sends();
                return reply::terminate(self.buf(gw), session, r.seq, r.code, &r.why);
            }
        };
        let o = Origin {
            gw,
            session,
            uin,
            device,
            seq,
        };
        // SENDs gathered this turn go out before anything else is served.
        if !matches!(request, LogicRequest::Send(_)) {
            self.run_sends();
        }
        match request {
            LogicRequest::Send(m) => self.send(o, m),
            LogicRequest::Sync(m) => self.sync(o, m),
            LogicRequest::Join(ch) => self.join(o, ch),
            LogicRequest::Leave(ch) => self.leave(o, ch),
        }
    }

    fn send(&mut self, o: Origin, req: pb::SendReq) {
        let (ch, cmid) = (req.channel, req.client_msg_id);
        if kind_of(ch) == ChannelKind::Invalid {
            return reply::send_ack(self.buf(o.gw), &o, Status::Invalid, ch, 0, cmid);
        }
        if req.body.len() > self.cfg.max_send_body {
            return reply::send_ack(self.buf(o.gw), &o, Status::TooLarge, ch, 0, cmid);
        }
        self.sends.push(Send {
            o,
            ch,
            cmid,
            body: Bytes::copy_from_slice(&req.body),
        });
    }
}

mod requests;
