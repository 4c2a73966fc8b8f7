//! The worker's chat traffic: JOINs, SENDs paced at the worker's share of
//! the rate (round robin over its logged-in sessions), and the accounting
//! of SEND_ACKs and PUSHes. Per-session chat state lives here, in a table
//! made only when chat starts, so idle runs pay nothing for it.

use crate::chat::{self, Arrival, Mode, Seen};
use crate::session::Phase;
use crate::worker::{Worker, unix_us};

/// Most SENDs written in one loop turn.
const SENDS_PER_TURN: u64 = 2_048;

/// A running chat phase.
#[derive(Debug)]
pub(super) struct ChatRun {
    mode: Mode,
    /// Messages per second for this worker.
    rate: f64,
    payload: usize,
    /// Sessions in the whole run (an odd one out in pairs mode is silent).
    sessions: u64,
    start_us: u64,
    end_us: u64,
    sent: u64,
    cursor: usize,
    /// Receive state by slab index, with the generation it belongs to.
    seen: Vec<(u32, Seen)>,
    last_client_msg_id: u64,
}

impl ChatRun {
    /// True while SENDs are still due.
    pub(super) fn sending(&self, now: u64) -> bool {
        now < self.end_us
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

    pub(super) fn chat_start(
        &mut self,
        now: u64,
        mode: Mode,
        rate: f64,
        sessions: u64,
        payload: usize,
        duration_ms: u64,
    ) {
        let share = self.spec.share.count as f64 / sessions.max(1) as f64;
        self.chat = Some(ChatRun {
            mode,
            rate: rate * share,
            payload,
            sessions,
            start_us: now,
            end_us: now + duration_ms * 1000,
            sent: 0,
            cursor: 0,
            seen: Vec::new(),
            last_client_msg_id: 0,
        });
    }

    /// Writes the SENDs due by `now`.
    pub(super) fn chat_send(&mut self, now: u64) {
        let Some(mut run) = self.chat.take() else {
            return;
        };
        if run.sending(now) {
            let due = (run.rate * now.saturating_sub(run.start_us) as f64 / 1e6) as u64;
            let n = due.saturating_sub(run.sent).min(SENDS_PER_TURN);
            let slots = self.conns.capacity().max(1);
            for _ in 0..n {
                // The next logged-in session after the cursor, if any.
                let mut found = None;
                for _ in 0..slots {
                    let idx = run.cursor;
                    run.cursor = (run.cursor + 1) % slots;
                    let talks = |global: u64| match run.mode {
                        Mode::Pairs => global ^ 1 < run.sessions,
                        Mode::Rooms { .. } => true,
                    };
                    let base = self.spec.uin_base;
                    if self
                        .conns
                        .get(idx)
                        .is_some_and(|c| c.s.phase() == Phase::Ready && talks(c.s.uin() - base))
                    {
                        found = Some(idx);
                        break;
                    }
                }
                let Some(idx) = found else { break };
                let ts = unix_us();
                run.last_client_msg_id = (run.last_client_msg_id + 1).max(ts);
                let body = chat::body(ts, run.payload);
                let Some(c) = self.conns.get_mut(idx) else {
                    continue;
                };
                let to = run
                    .mode
                    .target(c.s.uin() - self.spec.uin_base, self.spec.uin_base);
                if c.s
                    .send(to, run.last_client_msg_id, &body, &mut self.outbuf)
                {
                    run.sent += 1;
                    self.stats.counters.chat_sent += 1;
                    self.after(now, idx, None);
                }
            }
        }
        self.chat = Some(run);
    }

    /// A SEND_ACK (with its channel and id) or, for `None`, a JOIN_ACK.
    pub(super) fn chat_acked(&mut self, status: i32, send: Option<(u64, u64)>) {
        let k = &mut self.stats.counters;
        match (status, send) {
            (0, Some((channel, msg_id))) => {
                k.chat_acked += 1;
                // A room's last id counts even if no PUSH of it arrives.
                if let Some(ChatRun {
                    mode: Mode::Rooms { .. },
                    ..
                }) = self.chat
                {
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
        if channel != run.mode.listens(global, self.spec.uin_base) {
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
        if let Mode::Rooms { .. } = run.mode {
            let high = k.chat_room_high.entry(channel).or_default();
            *high = (*high).max(msg_id);
        }
        if let Some(ts) = stamp_us {
            self.stats.chat_e2e_us.record(unix_us().saturating_sub(ts));
        }
    }
}
