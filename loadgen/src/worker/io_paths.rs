//! The worker's socket paths: reading and decoding frames, writing what a
//! session produced, counting its events, and tearing connections down.

use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};

use super::{Conn, Worker};
use crate::session::{Event, Phase};

/// Largest frame body accepted from the server.
const MAX_BODY: usize = proto::codec::DEFAULT_MAX_BODY;

impl Worker {
    /// Reads what is available on `idx` and feeds it to its session.
    ///
    /// Readiness is edge-triggered (epoll): a read shorter than the buffer
    /// emptied the socket, and anything arriving later raises a new edge,
    /// so the extra read that would only say `WouldBlock` is skipped. A
    /// FIN already queued when the edge was raised is reported on that
    /// same event as read-closed (`closing`), and then we read to EOF.
    pub(super) fn read(&mut self, now: u64, idx: usize, closing: bool) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        self.inbuf.clear();
        if !c.rbuf.is_empty() {
            self.inbuf.extend_from_slice(&c.rbuf);
            c.rbuf = BytesMut::new();
        }
        let mut eof = false;
        loop {
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&self.scratch[..n]);
                    if n < self.scratch.len() && !closing {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        while let Some(c) = self.conns.get_mut(idx) {
            match proto::decode(&mut self.inbuf, MAX_BODY) {
                Ok(Some(frame)) => {
                    let ev = c.s.handle_frame(now, &self.cfg, &frame);
                    self.after(now, idx, ev);
                }
                Ok(None) => break,
                Err(_) => {
                    let ev = c.s.handle_bad_frame();
                    self.after(now, idx, ev);
                    break;
                }
            }
        }
        let Some(c) = self.conns.get_mut(idx) else {
            self.inbuf.clear();
            return;
        };
        if eof {
            let ev = c.s.handle_closed();
            self.after(now, idx, ev);
            // Closed by the server after a GOAWAY: no event, just go.
            if self.conns.contains(idx) {
                self.drop_conn(idx);
            }
        } else if !self.inbuf.is_empty() {
            c.rbuf = BytesMut::from(&self.inbuf[..]);
        }
        self.inbuf.clear();
    }

    /// Writes `self.outbuf` (what a session just produced) to `idx`,
    /// keeping any unwritten tail in the connection. False on a dead socket.
    fn write_out(&mut self, idx: usize) -> bool {
        if self.outbuf.is_empty() {
            return true;
        }
        let Some(c) = self.conns.get_mut(idx) else {
            self.outbuf.clear();
            return true;
        };
        let ok = if c.wbuf.is_empty() {
            let ok = write_some(c, &mut self.outbuf);
            if !self.outbuf.is_empty() {
                c.wbuf = BytesMut::from(&self.outbuf[..]);
            }
            ok
        } else {
            c.wbuf.extend_from_slice(&self.outbuf);
            let mut w = std::mem::take(&mut c.wbuf);
            let ok = write_some(c, &mut w);
            c.wbuf = w;
            ok
        };
        self.outbuf.clear();
        ok
    }

    /// Writable again: sends what was left over.
    pub(super) fn flush(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.wbuf.is_empty() {
            return;
        }
        let mut w = std::mem::take(&mut c.wbuf);
        let ok = write_some(c, &mut w);
        c.wbuf = if w.is_empty() { BytesMut::new() } else { w };
        if !ok {
            let ev = c.s.handle_closed();
            self.after(0, idx, ev);
        }
    }

    /// After any session call: send its output, count its event, and
    /// either re-arm its timer or remove it if it has ended.
    pub(super) fn after(&mut self, now: u64, idx: usize, ev: Option<Event>) {
        let mut ev = ev;
        if !self.write_out(idx)
            && let Some(c) = self.conns.get_mut(idx)
            && ev.is_none()
        {
            ev = c.s.handle_closed();
        }
        if let Some(ev) = ev {
            self.count(now, idx, ev);
        }
        match self.conns.get(idx).map(|c| c.s.phase()) {
            Some(Phase::Closed) => self.drop_conn(idx),
            Some(_) => self.arm(idx),
            None => {}
        }
    }

    fn count(&mut self, now: u64, idx: usize, ev: Event) {
        let k = &mut self.stats.counters;
        match ev {
            Event::LoggedIn {
                connect_us,
                login_us,
            } => {
                k.logged_in += 1;
                k.up += 1;
                self.inflight -= 1;
                self.stats.connect_us.record(connect_us);
                self.stats.login_us.record(login_us);
                if let Some(c) = self.conns.get_mut(idx) {
                    c.up = true;
                    if c.relogin {
                        self.stats.counters.relogins += 1;
                        if let Some(t0) = self.storm_start_us {
                            self.stats.relogin_ms.record(now.saturating_sub(t0) / 1000);
                        }
                    }
                }
            }
            Event::HeartbeatAcked { rtt_us } => {
                k.hb_acked += 1;
                if let Some(rtt) = rtt_us {
                    self.stats.hb_rtt_us.record(rtt);
                }
            }
            Event::Failed(r) => {
                self.inflight -= 1;
                *k.failed.entry(r.as_str()).or_default() += 1;
            }
            Event::Lost(r) => *k.lost.entry(r.as_str()).or_default() += 1,
            Event::SendAcked {
                status,
                channel,
                msg_id,
            } => self.chat_acked(idx, status, Some((channel, msg_id))),
            Event::Joined { status } => self.chat_acked(idx, status, None),
            Event::Pushed {
                channel,
                msg_id,
                stamp_us,
            } => self.chat_pushed(idx, channel, msg_id, stamp_us),
            Event::GoAway { after_ms } => {
                k.goaways += 1;
                self.stats.goaway_after_ms.record(u64::from(after_ms));
                if self.spec.reconnect_on_goaway
                    && let Some(c) = self.conns.get(idx)
                {
                    let global = c.s.uin() - self.spec.uin_base;
                    let due = now + u64::from(after_ms) * 1000;
                    self.reconnects
                        .push(std::cmp::Reverse((due, global, idx, c.generation)));
                }
            }
        }
    }

    /// We end `idx` ourselves: no event is counted.
    pub(super) fn close(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx) {
            c.s.close();
            self.drop_conn(idx);
        }
    }

    /// Removes `idx` and closes its socket, keeping `up` and `inflight`
    /// right whatever state it was in.
    pub(super) fn drop_conn(&mut self, idx: usize) {
        let Some(mut c) = self.conns.try_remove(idx) else {
            return;
        };
        if matches!(c.s.phase(), Phase::Connecting | Phase::LoggingIn) {
            self.inflight -= 1;
        }
        if c.up {
            self.stats.counters.up -= 1;
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
    }
}

/// Writes from the front of `buf` until it is empty or the socket would
/// block. False when the socket is dead.
fn write_some(c: &mut Conn, buf: &mut BytesMut) -> bool {
    while !buf.is_empty() {
        match c.stream.write(buf) {
            Ok(0) => return false,
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
