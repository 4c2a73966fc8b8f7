//! A deterministic harness for [`Connection`]s: a virtual clock, a timer
//! wheel, a slab of slots, sockets modelled as byte sinks with a chosen
//! room, and a model of the uplink's queue. It drives connections exactly
//! as the worker does (the same sequence of `handle_*` and `poll_*` calls),
//! so the unit tests and the `connection` fuzz target check the policy
//! without a network. Public so the fuzz checks can use it.

use bytes::{Bytes, BytesMut};
use proto::Frame;
use proto::link::SessionRef;
use slab::Slab;

use super::{ConnConfig, Connection, Delivery, Drain, Shared, UpSink};
use crate::conn_id::ConnId;
use crate::metrics::WorkerStats;
use crate::session::{CloseReason, Now, State};
use crate::uplink::Up;
use crate::wheel::{Link, Links, Wheel};

/// The uplink's queue, modelled: it holds `room` items at most; the
/// harness takes them off with [`Sim::take_up`].
#[derive(Debug, Default)]
pub struct ModelUp {
    pub items: Vec<Up>,
    pub room: usize,
}

impl UpSink for ModelUp {
    fn push(&mut self, item: Up) -> Result<(), Up> {
        if self.items.len() >= self.room {
            return Err(item);
        }
        self.items.push(item);
        Ok(())
    }
}

/// One slot: the connection and its modelled socket.
#[derive(Debug)]
pub struct Slot {
    pub conn: Connection,
    link: Link,
    /// Every byte written to the socket, in order (what the client got).
    pub wire: BytesMut,
    /// Bytes the socket takes before it would block.
    pub room: usize,
    /// The write side was shut.
    pub shut: bool,
    /// Registered for writable.
    pub writable: bool,
}

struct SlotLinks<'a>(&'a mut Slab<Slot>);

impl Links for SlotLinks<'_> {
    fn link(&mut self, key: u32) -> &mut Link {
        &mut self.0[key as usize].link
    }
}

/// A slot that was freed, with what its socket got.
#[derive(Debug)]
pub struct Freed {
    pub id: ConnId,
    pub epoch: u32,
    pub at_ms: u64,
    /// The state it was in when freed.
    pub state: State,
    /// Its heartbeat interval then (ms).
    pub hb_ms: u32,
    /// Freed by its timer firing (idle expiry, or the linger's end).
    pub by_timer: bool,
    pub wire: BytesMut,
    pub shut: bool,
}

/// The harness (see the module doc).
#[derive(Debug)]
pub struct Sim {
    pub now: Now,
    pub sh: Shared<ModelUp>,
    pub slots: Slab<Slot>,
    pub wheel: Wheel,
    pub drain: Option<Drain>,
    /// Slots freed so far, in order.
    pub freed: Vec<Freed>,
    fired: Vec<u32>,
    in_timer: bool,
}

impl std::fmt::Debug for SlotLinks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotLinks")
    }
}

impl Sim {
    /// A worker at `now` with these settings, a rate-limit table of its own
    /// and a wheel of `tick_ms` ticks; the uplink's queue has `up_room`
    /// places.
    pub fn new(cfg: ConnConfig, now: Now, tick_ms: u64, up_room: usize) -> Sim {
        let buckets = std::sync::Arc::new(crate::ratelimit::Shared::new(1024));
        let up = ModelUp {
            items: Vec::new(),
            room: up_room,
        };
        Sim {
            now,
            sh: Shared::new(
                cfg,
                std::sync::Arc::new(WorkerStats::default()),
                buckets,
                up,
                now,
            ),
            slots: Slab::new(),
            wheel: Wheel::new(64, tick_ms, now.mono_ms),
            drain: None,
            freed: Vec::new(),
            fired: Vec::new(),
            in_timer: false,
        }
    }

    fn id(&self, key: usize) -> ConnId {
        ConnId::new(self.sh.cfg.worker, key)
    }

    /// Moves the clock to `mono_ms` (never back); wall time moves alike.
    pub fn set_time(&mut self, mono_ms: u64) {
        if mono_ms > self.now.mono_ms {
            self.now.unix_ms += mono_ms - self.now.mono_ms;
            self.now.mono_ms = mono_ms;
        }
    }

    /// Takes what the uplink queue holds (the uplink drained it).
    pub fn take_up(&mut self) -> Vec<Up> {
        std::mem::take(&mut self.sh.up.items)
    }

    /// Sets how many items the uplink queue takes from now on.
    pub fn set_up_room(&mut self, room: usize) {
        self.sh.up.room = room;
    }

    /// A client connects; its socket takes `room` bytes. None when the
    /// worker is full (or draining).
    pub fn accept(&mut self, room: usize) -> Option<usize> {
        if self.drain.is_some() || !self.sh.may_accept(self.slots.len()) {
            return None;
        }
        let key = self.slots.vacant_key();
        let id = self.id(key);
        let conn = Connection::new(self.now, &mut self.sh, id);
        self.slots.insert(Slot {
            conn,
            link: Link::default(),
            wire: BytesMut::new(),
            room,
            shut: false,
            writable: false,
        });
        self.apply(key);
        Some(key)
    }

    /// The client at `key` sent `bytes` (one read).
    pub fn read(&mut self, key: usize, bytes: &[u8]) {
        let id = self.id(key);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let parked = slot.conn.take_read();
        let shared = parked.is_none();
        let mut buf = parked.unwrap_or_default();
        buf.extend_from_slice(bytes);
        slot.conn.handle_read(self.now, &mut self.sh, id, &mut buf);
        slot.conn.park_read(&mut buf, shared);
        self.transmit(key);
    }

    /// The client at `key` closed (or its socket failed, `Io`).
    pub fn eof(&mut self, key: usize, reason: CloseReason) {
        let id = self.id(key);
        if let Some(slot) = self.slots.get_mut(key) {
            slot.conn.handle_eof(self.now, &mut self.sh, id, reason);
            self.apply(key);
        }
    }

    /// The socket at `key` now takes `room` more bytes; if registered for
    /// writable, the queue is written.
    pub fn set_room(&mut self, key: usize, room: usize) {
        let id = self.id(key);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.room = room;
        if !slot.writable {
            return;
        }
        let Some(queued) = slot.conn.poll_queued() else {
            return;
        };
        let n = write(&mut slot.wire, &mut slot.room, queued);
        slot.conn.handle_written(self.now, &mut self.sh, id, Ok(n));
        self.apply(key);
    }

    /// Advances the clock to `mono_ms` the way the worker's loop does: it
    /// wakes 1 ms after each due wheel deadline (and drain step) on the
    /// way, fires what is due, and ends at `mono_ms`.
    pub fn advance(&mut self, mono_ms: u64) {
        loop {
            let mut next = self.wheel.next_deadline_ms();
            if let Some(d) = &self.drain {
                let at = d.poll_timeout();
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            match next {
                // (A deadline already passed is the drain's end: the
                // worker would have stopped.)
                Some(at) if at < mono_ms && at >= self.now.mono_ms => {
                    self.set_time(at + 1);
                    self.turn();
                }
                _ => break,
            }
        }
        self.set_time(mono_ms);
        self.turn();
    }

    /// One loop turn's timer work: notices unstall, the wheel fires, the
    /// drain closes whose turn has come.
    pub fn turn(&mut self) {
        self.sh.handle_turn(self.now);
        self.wheel.advance(
            &mut SlotLinks(&mut self.slots),
            self.now.mono_ms,
            &mut self.fired,
        );
        for key in std::mem::take(&mut self.fired) {
            let key = key as usize;
            let id = self.id(key);
            if let Some(slot) = self.slots.get_mut(key) {
                slot.conn.handle_timeout(self.now, &mut self.sh, id);
                self.in_timer = true;
                self.transmit(key);
                self.in_timer = false;
            }
        }
        if let Some(mut drain) = self.drain.take() {
            while let Some((key, epoch)) = drain.poll_due(self.now.mono_ms) {
                let id = self.id(key);
                if let Some(slot) = self.slots.get_mut(key) {
                    slot.conn
                        .handle_drain_close(self.now, &mut self.sh, id, epoch);
                    self.transmit(key);
                }
            }
            self.drain = Some(drain);
        }
    }

    /// The uplink says the link is up (`true`) or down.
    pub fn link(&mut self, up: bool) {
        if !up {
            self.sh.handle_link_down();
            return;
        }
        self.sh.handle_link_up();
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            let id = self.id(key);
            self.slots[key]
                .conn
                .handle_link_up(self.now, &mut self.sh, id);
        }
    }

    /// A `Deliver` of `frame` to `targets`, written the way the worker
    /// writes a wake's deliveries (straight, then the rest staged).
    pub fn deliver(&mut self, targets: &[SessionRef], frame: &Bytes) {
        match self.sh.handle_deliver(frame, targets) {
            Delivery::Write => {}
            Delivery::Dropped => return,
            Delivery::AnswerDropped(t) => {
                if let Some((id, epoch)) = self.sh.local(t)
                    && let Some(slot) = self.slots.get_mut(id.key())
                {
                    slot.conn
                        .handle_dropped_reply(&mut self.sh, id, epoch, frame);
                    self.transmit(id.key());
                }
                return;
            }
        }
        for &t in targets {
            let Some((id, epoch)) = self.sh.local(t) else {
                continue;
            };
            let Some(slot) = self.slots.get_mut(id.key()) else {
                continue;
            };
            if !slot.conn.accept_delivery(&self.sh, epoch) {
                continue;
            }
            let frames = std::iter::once(&frame[..]);
            let mut written = 0;
            if !slot.conn.has_write() {
                for f in frames.clone() {
                    written += write(&mut slot.wire, &mut slot.room, f);
                }
            }
            slot.conn
                .handle_frames_written(&mut self.sh, id, frames, written);
            self.transmit(id.key());
        }
    }

    /// A `Kick`, `Terminate` (`frame`) or `Bounce` (`bounce`) for `s`.
    pub fn kick(&mut self, s: SessionRef, reason: i32) {
        if let Some((id, epoch)) = self.sh.local(s)
            && let Some(slot) = self.slots.get_mut(id.key())
        {
            slot.conn
                .handle_kick(self.now, &mut self.sh, id, epoch, reason);
            self.transmit(id.key());
        }
    }

    pub fn terminate(&mut self, s: SessionRef, frame: &Bytes) {
        if let Some((id, epoch)) = self.sh.local(s)
            && let Some(slot) = self.slots.get_mut(id.key())
        {
            slot.conn
                .handle_terminate(self.now, &mut self.sh, id, epoch, frame);
            self.transmit(id.key());
        }
    }

    pub fn bounce(&mut self, s: SessionRef, frame: &Frame) {
        if let Some((id, epoch)) = self.sh.local(s)
            && let Some(slot) = self.slots.get_mut(id.key())
        {
            slot.conn
                .handle_bounce(self.now, &mut self.sh, id, epoch, frame);
            self.transmit(id.key());
        }
    }

    /// The worker starts draining.
    pub fn start_drain(&mut self) {
        if self.drain.is_some() {
            return;
        }
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        let mut live = Vec::new();
        for key in keys {
            let id = self.id(key);
            let slot = &mut self.slots[key];
            if slot.conn.handle_drain_start(self.now, &mut self.sh, id) {
                live.push((key, u64::from(slot.conn.session().epoch())));
            }
            self.apply(key);
        }
        let mut drain = Drain::new(self.now.mono_ms, &self.sh.cfg, live.len());
        for (key, epoch) in live {
            let delay = drain.schedule(key, epoch);
            let id = self.id(key);
            self.slots[key].conn.handle_goaway(&mut self.sh, id, delay);
            self.transmit(key);
        }
        self.drain = Some(drain);
    }

    /// The session `key` holds now, as a `SessionRef`.
    pub fn session_ref(&self, key: usize) -> Option<SessionRef> {
        let slot = self.slots.get(key)?;
        Some(self.id(key).pack(slot.conn.session().epoch()))
    }

    fn transmit(&mut self, key: usize) {
        let id = self.id(key);
        let slot = &mut self.slots[key];
        if let Some(bytes) = slot.conn.poll_transmit(self.now, &mut self.sh, id) {
            let n = write(&mut slot.wire, &mut slot.room, bytes);
            slot.conn.handle_written(self.now, &mut self.sh, id, Ok(n));
        }
        self.apply(key);
    }

    fn apply(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        if let Some(writable) = self.sh.poll_interest() {
            slot.writable = writable;
        }
        if self.sh.poll_shutdown() {
            slot.shut = true;
        }
        let timer = self.sh.poll_timeout();
        if self.sh.poll_close() {
            self.wheel
                .cancel(&mut SlotLinks(&mut self.slots), key as u32);
            let slot = self.slots.remove(key);
            self.freed.push(Freed {
                id: self.id(key),
                epoch: slot.conn.session().epoch(),
                at_ms: self.now.mono_ms,
                state: slot.conn.state(),
                hb_ms: slot.conn.session().heartbeat_ms(),
                by_timer: self.in_timer,
                wire: slot.wire,
                shut: slot.shut,
            });
            return;
        }
        if let Some(at) = timer {
            self.wheel
                .insert(&mut SlotLinks(&mut self.slots), key as u32, at);
        }
    }
}

/// Writes what `room` allows of `bytes` to `wire`; bytes written.
fn write(wire: &mut BytesMut, room: &mut usize, bytes: &[u8]) -> usize {
    let n = bytes.len().min(*room);
    wire.extend_from_slice(&bytes[..n]);
    *room -= n;
    n
}
