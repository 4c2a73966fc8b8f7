//! Chat traffic, sans-io: who a session sends to, what a message body
//! carries, and how a receiver classifies the `msg_id`s it sees.
//!
//! A body is the sender's wall clock in Unix microseconds (u64 BE) padded
//! with zeros to the payload size, so the receiver measures end-to-end
//! latency across worker processes. A receiver holds one channel (its
//! inbox in pairs mode, its room in rooms mode) whose ids the server
//! assigns 1, 2, 3, ... with no gaps (PROTOCOL.md rule 6), so the highest
//! id seen plus a 64-id window of which ids below it were seen tells
//! in-order, gap, late (out of order) and duplicate apart in 24 bytes.

use proto::inbox_of as inbox;
use serde::{Deserialize, Serialize};

/// Who talks to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sessions 2k and 2k+1 send direct messages to each other's inbox.
    Pairs,
    /// Session i joins room `i % rooms + 1` and sends to it.
    Rooms { rooms: u64 },
}

impl Mode {
    /// The channel session `global` sends to, given `uin_base`.
    pub fn target(self, global: u64, uin_base: u64) -> u64 {
        match self {
            Mode::Pairs => inbox(uin_base + (global ^ 1)),
            Mode::Rooms { rooms } => global % rooms.max(1) + 1,
        }
    }

    /// The channel session `global` receives on.
    pub fn listens(self, global: u64, uin_base: u64) -> u64 {
        match self {
            Mode::Pairs => inbox(uin_base + global),
            Mode::Rooms { rooms } => global % rooms.max(1) + 1,
        }
    }

    /// The room to JOIN first, if any.
    pub fn room(self, global: u64) -> Option<u64> {
        match self {
            Mode::Pairs => None,
            Mode::Rooms { .. } => Some(self.target(global, 0)),
        }
    }
}

/// Sessions of a run of `sessions` that are in `room` (1-based).
pub fn members(room: u64, sessions: u64, rooms: u64) -> u64 {
    let rooms = rooms.max(1);
    let r = room.saturating_sub(1);
    sessions / rooms + u64::from(r < sessions % rooms)
}

/// PUSHes the receivers should get: each acked message once in pairs
/// mode; in rooms mode every id up to each room's highest, once per member.
pub fn expected(
    mode: Mode,
    sessions: u64,
    acked: u64,
    room_high: &std::collections::BTreeMap<u64, u64>,
) -> u64 {
    match mode {
        Mode::Pairs => acked,
        Mode::Rooms { rooms } => room_high
            .iter()
            .map(|(room, high)| high * members(*room, sessions, rooms))
            .sum(),
    }
}

/// A chat body of `len` bytes (at least 8) stamped with `unix_us`.
pub fn body(unix_us: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(8)];
    b[..8].copy_from_slice(&unix_us.to_be_bytes());
    b
}

/// The send time stamped in a body, if it has one.
pub fn stamp(body: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*body.first_chunk::<8>()?))
}

/// How a received id relates to what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next id expected.
    InOrder,
    /// Ahead of the next expected by this many missing ids (so far).
    Gap(u64),
    /// Below the highest seen and not seen before.
    Late,
    /// Seen before.
    Duplicate,
}

/// What one receiver has seen of its channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Highest id seen (0: none).
    high: u64,
    /// Bit i set: id `high - 1 - i` was seen.
    below: u64,
    unique: u64,
}

impl Seen {
    /// Records `id` and classifies it.
    pub fn record(&mut self, id: u64) -> Arrival {
        if id > self.high {
            let shift = id - self.high;
            // The old high moves into the window at bit shift-1.
            self.below = match (self.high, shift) {
                (0, _) | (_, 64..) => 0,
                _ => (self.below << shift) | (1 << (shift - 1)),
            };
            let expected = self.high + 1;
            self.high = id;
            self.unique += 1;
            if id == expected {
                Arrival::InOrder
            } else {
                Arrival::Gap(id - expected)
            }
        } else if id == self.high {
            Arrival::Duplicate
        } else {
            let back = self.high - 1 - id;
            if back >= 64 {
                // Too far back to tell: counted as late, once or not.
                self.unique += 1;
                return Arrival::Late;
            }
            let bit = 1u64 << back;
            if self.below & bit != 0 {
                Arrival::Duplicate
            } else {
                self.below |= bit;
                self.unique += 1;
                Arrival::Late
            }
        }
    }

    /// Distinct ids seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    pub fn high(&self) -> u64 {
        self.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_talk_to_each_other_and_rooms_share_a_channel() {
        let m = Mode::Pairs;
        assert_eq!(m.target(4, 100), inbox(105));
        assert_eq!(m.target(5, 100), inbox(104));
        assert_eq!(m.listens(5, 100), inbox(105));
        assert_eq!(m.room(5), None);
        let r = Mode::Rooms { rooms: 3 };
        assert_eq!(r.target(4, 100), 2);
        assert_eq!(r.listens(7, 100), 2);
        assert_eq!(r.room(2), Some(3));
    }

    #[test]
    fn expected_pushes_count_every_member() {
        assert_eq!(members(1, 10, 3), 4);
        assert_eq!(members(2, 10, 3), 3);
        assert_eq!(members(3, 10, 3), 3);
        let highs = [(1, 5), (2, 2)].into_iter().collect();
        assert_eq!(
            expected(Mode::Rooms { rooms: 3 }, 10, 7, &highs),
            5 * 4 + 2 * 3
        );
        assert_eq!(expected(Mode::Pairs, 10, 7, &highs), 7);
    }

    #[test]
    fn bodies_carry_their_send_time() {
        let b = body(0x0102_0304_0506_0708, 32);
        assert_eq!(b.len(), 32);
        assert_eq!(stamp(&b), Some(0x0102_0304_0506_0708));
        assert_eq!(body(5, 2).len(), 8);
        assert_eq!(stamp(&[1, 2, 3]), None);
    }

    #[test]
    fn ids_are_told_apart() {
        let mut s = Seen::default();
        assert_eq!(s.record(1), Arrival::InOrder);
        assert_eq!(s.record(2), Arrival::InOrder);
        assert_eq!(s.record(2), Arrival::Duplicate);
        assert_eq!(s.record(5), Arrival::Gap(2));
        assert_eq!(s.record(4), Arrival::Late);
        assert_eq!(s.record(4), Arrival::Duplicate);
        assert_eq!(s.record(3), Arrival::Late);
        assert_eq!(s.record(1), Arrival::Duplicate);
        assert_eq!(s.record(6), Arrival::InOrder);
        assert_eq!(s.high(), 6);
        assert_eq!(s.unique(), 6);
    }

    #[test]
    fn a_first_id_above_one_is_a_gap_from_one() {
        let mut s = Seen::default();
        assert_eq!(s.record(4), Arrival::Gap(3));
        assert_eq!(s.record(1), Arrival::Late);
        assert_eq!(s.record(1), Arrival::Duplicate);
    }

    #[test]
    fn far_jumps_forget_the_window_without_panicking() {
        let mut s = Seen::default();
        assert_eq!(s.record(1), Arrival::InOrder);
        assert_eq!(s.record(1_000), Arrival::Gap(998));
        assert_eq!(s.record(999), Arrival::Late);
        assert_eq!(s.record(999), Arrival::Duplicate);
        assert_eq!(s.record(10), Arrival::Late);
    }
}
