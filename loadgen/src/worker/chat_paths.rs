//! The worker's chat traffic: JOINs, SENDs either paced at the worker's
//! share of the rate (round robin over its logged-in senders) or pipelined
//! (each sender keeps a window of SENDs unacknowledged), and the accounting
//! of SEND_ACKs and PUSHes. Per-session chat state lives here, in tables
//! made only when chat starts, so idle runs pay nothing for it.

use crate::chat::{self, Arrival, Mode, Seen};
use crate::session::Phase;
use crate::wire::ChatPlan;
use crate::worker::{Worker, unix_us};

/// Most SENDs written in one loop turn when paced.
const SENDS_PER_TURN: u64 = 2_048;

/// A running chat phase.
#[derive(Debug)]
pub(super) struct ChatRun {
    plan: ChatPlan,
    /// Messages per second for this worker (paced mode).
    rate: f64,
    start_us: u64,
    end_us: u64,
    sent: u64,
    cursor: usize,
    /// Receive state by slab index, with the generation it belongs to.
    seen: Vec<(u32, Seen)>,
    /// Window mode: unacknowledged SENDs by slab index.
    outstanding: Vec<u32>,
    /// Window mode: senders with room in their window, topped up once per
    /// loop turn so that the SENDs an ACK batch frees leave in one write.
    refill: Vec<usize>,
    primed: bool,
    last_client_msg_id: u64,
}

impl ChatRun {
    /// True while SENDs are still due.
    pub(super) fn sending(&self, now: u64) -> bool {
        now < self.end_us
    }

    /// Whether session `global` of the run sends.
    fn talks(&self, global: u64) -> bool {
        let p = &self.plan;
        (p.senders == 0 || global < p.senders)
            && match p.mode {
                // The odd one out of an odd count has no partner.
                Mode::Pairs => global ^ 1 < p.sessions,
                Mode::Rooms { .. } => true,
            }
    }
}

fn status_name(status: i32) -> &'static str {
    proto::pb::Status::try_from(status).map_or("UNKNOWN", |s| s.as_str_name())
}

impl Worker {
    /// Rooms mode: every logged-in session JOINs its room.
    pub(super) fn chat_join(&mut self, now: u64, mode: Mode) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for idx in keys {
            let Some(c) = self.conns.get_mut(idx) else {
                continue;
            };
            let Some(room) = mode.room(c.s.uin() - self.spec.uin_base) else {
                continue;
            };
            if c.s.join(room, &mut self.outbuf) {
                self.after(now, idx, None);
            }
        }
    }

    pub(super) fn chat_start(&mut self, now: u64, plan: ChatPlan) {
        let share = self.spec.share.count as f64 / plan.sessions.max(1) as f64;
        self.chat = Some(ChatRun {
            plan,
            rate: plan.rate * share,
            start_us: now,
            end_us: now + plan.duration_ms * 1000,
            sent: 0,
            cursor: 0,
            seen: Vec::new(),
            outstanding: Vec::new(),
            refill: Vec::new(),
            primed: false,
            last_client_msg_id: 0,
        });
    }

    /// Writes the SENDs due by `now`.
    pub(super) fn chat_send(&mut self, now: u64) {
        let Some(mut run) = self.chat.take() else {
            return;
        };
        if run.sending(now) {
            if run.plan.window == 0 {
                self.send_paced(now, &mut run);
            } else {
                self.send_windows(now, &mut run);
            }
        }
        self.chat = Some(run);
    }

    fn is_sender(&self, run: &ChatRun, idx: usize) -> bool {
        self.conns.get(idx).is_some_and(|c| {
            c.s.phase() == Phase::Ready && run.talks(c.s.uin() - self.spec.uin_base)
        })
    }

    /// Paced: the SENDs the rate makes due, round robin over the senders.
    fn send_paced(&mut self, now: u64, run: &mut ChatRun) {
        let due = (run.rate * now.saturating_sub(run.start_us) as f64 / 1e6) as u64;
        let n = due.saturating_sub(run.sent).min(SENDS_PER_TURN);
        let slots = self.conns.capacity().max(1);
        for _ in 0..n {
            // The next sender after the cursor, if any.
            let mut found = None;
            for _ in 0..slots {
                let idx = run.cursor;
                run.cursor = (run.cursor + 1) % slots;
                if self.is_sender(run, idx) {
                    found = Some(idx);
                    break;
                }
            }
            let Some(idx) = found else { break };
            if self.encode_send(run, idx) {
                self.after(now, idx, None);
            }
        }
    }

    /// Pipelined: every sender with room in its window fills it, all of a
    /// sender's SENDs in one write.
    fn send_windows(&mut self, now: u64, run: &mut ChatRun) {
        if !run.primed {
            run.primed = true;
            run.outstanding = vec![0; self.conns.capacity()];
            run.refill = self.conns.iter().map(|(k, _)| k).collect();
        }
        let mut refill = std::mem::take(&mut run.refill);
        for idx in refill.drain(..) {
            if !self.is_sender(run, idx) || idx >= run.outstanding.len() {
                continue;
            }
            let mut wrote = false;
            while run.outstanding[idx] < run.plan.window && self.encode_send(run, idx) {
                run.outstanding[idx] += 1;
                wrote = true;
            }
            if wrote {
                self.after(now, idx, None);
            }
        }
        run.refill = refill;
    }

    /// Encodes one SEND from `idx` into the output buffer.
    fn encode_send(&mut self, run: &mut ChatRun, idx: usize) -> bool {
        let Some(c) = self.conns.get_mut(idx) else {
            return false;
        };
        let ts = unix_us();
        run.last_client_msg_id = (run.last_client_msg_id + 1).max(ts);
        let body = chat::body(ts, run.plan.payload);
        let to = run
            .plan
            .mode
            .target(c.s.uin() - self.spec.uin_base, self.spec.uin_base);
        let ok =
            c.s.send(to, run.last_client_msg_id, &body, &mut self.outbuf);
        if ok {
            run.sent += 1;
            self.stats.counters.chat_sent += 1;
        }
        ok
    }

    /// A SEND_ACK (with its channel and id) or, for `None`, a JOIN_ACK.
    pub(super) fn chat_acked(&mut self, idx: usize, status: i32, send: Option<(u64, u64)>) {
        if send.is_some()
            && let Some(run) = self.chat.as_mut()
            && run.plan.window > 0
            && let Some(n) = run.outstanding.get_mut(idx)
        {
            // The first ACK of a full window queues the sender for a top-up.
            if *n == run.plan.window {
                run.refill.push(idx);
            }
            *n = n.saturating_sub(1);
        }
        let k = &mut self.stats.counters;
        match (status, send) {
            (0, Some((channel, msg_id))) => {
                k.chat_acked += 1;
                // A room's last id counts even if no PUSH of it arrives.
                if let Some(Mode::Rooms { .. }) = self.chat.as_ref().map(|c| c.plan.mode) {
                    let high = k.chat_room_high.entry(channel).or_default();
                    *high = (*high).max(msg_id);
                }
            }
            (0, None) => k.chat_joined += 1,
            (s, Some(_)) => {
                *k.chat_errors
                    .entry(format!("send {}", status_name(s)))
                    .or_default() += 1
            }
            (s, None) => {
                *k.chat_errors
                    .entry(format!("join {}", status_name(s)))
                    .or_default() += 1
            }
        }
    }

    pub(super) fn chat_pushed(
        &mut self,
        idx: usize,
        channel: u64,
        msg_id: u64,
        stamp_us: Option<u64>,
    ) {
        let Some(run) = self.chat.as_mut() else {
            return;
        };
        let Some(c) = self.conns.get(idx) else { return };
        let global = c.s.uin() - self.spec.uin_base;
        if channel != run.plan.mode.listens(global, self.spec.uin_base) {
            return;
        }
        if run.seen.len() <= idx {
            run.seen
                .resize(self.conns.capacity().max(idx + 1), (0, Seen::default()));
        }
        let slot = &mut run.seen[idx];
        if slot.0 != c.generation {
            *slot = (c.generation, Seen::default());
        }
        let k = &mut self.stats.counters;
        k.chat_received += 1;
        match slot.1.record(msg_id) {
            Arrival::InOrder => {}
            Arrival::Gap(n) => k.chat_gap_ids += n,
            Arrival::Late => k.chat_out_of_order += 1,
            Arrival::Duplicate => k.chat_duplicates += 1,
        }
        if let Mode::Rooms { .. } = run.plan.mode {
            let high = k.chat_room_high.entry(channel).or_default();
            *high = (*high).max(msg_id);
        }
        if let Some(ts) = stamp_us {
            self.stats.chat_e2e_us.record(unix_us().saturating_sub(ts));
        }
    }
}
