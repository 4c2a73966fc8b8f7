//! One channel's state, sans-io: the `msg_id` counter (PROTOCOL.md rule 6),
//! the room membership (Channels section) and the retained messages
//! (rule 9 retention). Time is an argument; nothing here reads a clock.
//!
//! Retained messages are kept as their already-encoded PUSH frame, so a
//! SYNC replays them without re-encoding and a live fan-out encodes once.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

/// The high bit of a channel id: set for inboxes (`2^63 | uin`).
pub const INBOX_BIT: u64 = 1 << 63;

/// What a channel id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Channel 0: not a channel.
    Invalid,
    /// A room (below 2^63): members by JOIN and LEAVE.
    Room,
    /// The inbox of the given uin: its owner is its only member.
    Inbox(u64),
}

/// Classifies a channel id.
pub fn kind_of(channel: u64) -> ChannelKind {
    if channel == 0 {
        ChannelKind::Invalid
    } else if channel & INBOX_BIT != 0 {
        ChannelKind::Inbox(channel & !INBOX_BIT)
    } else {
        ChannelKind::Room
    }
}

/// The inbox channel of `uin`.
pub fn inbox_of(uin: u64) -> u64 {
    INBOX_BIT | uin
}

/// Retention limits (rule 9): the newest `max_count` messages, none older
/// than `max_age_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_count: usize,
    pub max_age_ms: u64,
}

/// A stored message: its id, when it was stored, and its PUSH frame.
#[derive(Debug, Clone)]
pub struct Stored {
    pub msg_id: u64,
    pub at_ms: u64,
    pub frame: Bytes,
}

/// One channel: counter, members (rooms only) and retained messages.
#[derive(Debug, Default)]
pub struct Channel {
    newest: u64,
    members: HashSet<u64>,
    /// The members with at least one live session: fan-out walks these
    /// only, so offline members of a big room cost nothing per message.
    online: HashSet<u64>,
    log: VecDeque<Stored>,
}

impl Channel {
    /// The newest `msg_id` assigned (0 before the first message). Never goes
    /// back, even when messages expire.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Adds a room member, online or not; true if it was not one.
    pub fn join(&mut self, uin: u64, online: bool) -> bool {
        let new = self.members.insert(uin);
        self.set_online(uin, online);
        new
    }

    /// Removes a room member; true if it was one.
    pub fn leave(&mut self, uin: u64) -> bool {
        self.online.remove(&uin);
        self.members.remove(&uin)
    }

    /// Records whether member `uin` has live sessions (ignored for others).
    pub fn set_online(&mut self, uin: u64, online: bool) {
        if !online {
            self.online.remove(&uin);
        } else if self.members.contains(&uin) {
            self.online.insert(uin);
        }
    }

    /// The members with live sessions.
    pub fn online_members(&self) -> impl Iterator<Item = u64> + '_ {
        self.online.iter().copied()
    }

    /// Whether `uin` has joined this room.
    pub fn is_member(&self, uin: u64) -> bool {
        self.members.contains(&uin)
    }

    /// Assigns the next `msg_id`, stores the frame `make_frame` builds for
    /// it and returns both. Ids start at 1 and go up by exactly 1.
    pub fn append(
        &mut self,
        now_ms: u64,
        ret: Retention,
        make_frame: impl FnOnce(u64) -> Bytes,
    ) -> (u64, Bytes) {
        self.newest += 1;
        let msg_id = self.newest;
        let frame = make_frame(msg_id);
        self.log.push_back(Stored {
            msg_id,
            at_ms: now_ms,
            frame: frame.clone(),
        });
        self.prune(now_ms, ret);
        (msg_id, frame)
    }

    /// Drops what retention no longer allows.
    pub fn prune(&mut self, now_ms: u64, ret: Retention) {
        while self.log.len() > ret.max_count {
            self.log.pop_front();
        }
        let oldest_allowed = now_ms.saturating_sub(ret.max_age_ms);
        while self.log.front().is_some_and(|m| m.at_ms < oldest_allowed) {
            self.log.pop_front();
        }
    }

    /// The retained messages newer than `head`, oldest first (after
    /// pruning by `now_ms`).
    pub fn since(
        &mut self,
        head: u64,
        now_ms: u64,
        ret: Retention,
    ) -> impl Iterator<Item = &Stored> {
        self.prune(now_ms, ret);
        // Ids in the log are contiguous, so the start is found by arithmetic.
        let first = self.log.front().map_or(0, |m| m.msg_id);
        let skip = head
            .saturating_add(1)
            .saturating_sub(first)
            .min(self.log.len() as u64);
        self.log.iter().skip(skip as usize)
    }

    /// Number of retained messages.
    pub fn retained(&self) -> usize {
        self.log.len()
    }

    /// True when the channel holds nothing worth keeping but its counter.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.log.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RET: Retention = Retention {
        max_count: 3,
        max_age_ms: 1_000,
    };

    fn frame(id: u64) -> Bytes {
        Bytes::from(id.to_be_bytes().to_vec())
    }

    fn ids<'a>(it: impl Iterator<Item = &'a Stored>) -> Vec<u64> {
        it.map(|m| m.msg_id).collect()
    }

    #[test]
    fn channel_kinds() {
        assert_eq!(kind_of(0), ChannelKind::Invalid);
        assert_eq!(kind_of(1), ChannelKind::Room);
        assert_eq!(kind_of(INBOX_BIT - 1), ChannelKind::Room);
        assert_eq!(kind_of(INBOX_BIT), ChannelKind::Inbox(0));
        assert_eq!(kind_of(inbox_of(42)), ChannelKind::Inbox(42));
    }

    #[test]
    fn ids_start_at_one_and_never_skip() {
        let mut c = Channel::default();
        assert_eq!(c.newest(), 0);
        let got: Vec<u64> = (0..10).map(|i| c.append(i, RET, frame).0).collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        assert_eq!(c.newest(), 10);
    }

    #[test]
    fn keeps_newest_n_and_since_is_exact() {
        let mut c = Channel::default();
        for t in 0..5 {
            c.append(t, RET, frame);
        }
        assert_eq!(c.retained(), 3);
        assert_eq!(ids(c.since(0, 5, RET)), vec![3, 4, 5]);
        assert_eq!(ids(c.since(3, 5, RET)), vec![4, 5]);
        assert_eq!(ids(c.since(5, 5, RET)), Vec::<u64>::new());
        assert_eq!(ids(c.since(99, 5, RET)), Vec::<u64>::new());
        let m = c.since(4, 5, RET).next().expect("message 5");
        assert_eq!(m.frame, frame(5));
    }

    #[test]
    fn expires_by_age_but_counter_survives() {
        let mut c = Channel::default();
        c.append(0, RET, frame);
        c.append(500, RET, frame);
        assert_eq!(ids(c.since(0, 1_000, RET)), vec![1, 2]);
        assert_eq!(ids(c.since(0, 1_001, RET)), vec![2]);
        assert_eq!(ids(c.since(0, 1_501, RET)), Vec::<u64>::new());
        assert_eq!(c.append(1_600, RET, frame).0, 3);
    }

    #[test]
    fn zero_retention_still_counts() {
        let ret = Retention {
            max_count: 0,
            max_age_ms: 1_000,
        };
        let mut c = Channel::default();
        assert_eq!(c.append(0, ret, frame), (1, frame(1)));
        assert_eq!(c.retained(), 0);
        assert_eq!(c.append(1, ret, frame).0, 2);
    }

    #[test]
    fn membership() {
        let mut c = Channel::default();
        assert!(c.is_idle());
        assert!(c.join(7, false));
        assert!(!c.join(7, false));
        assert!(c.is_member(7));
        assert!(!c.is_member(8));
        assert!(c.leave(7));
        assert!(!c.leave(7));
        assert!(c.is_idle());
    }

    #[test]
    fn online_members_are_a_subset_of_members() {
        let mut c = Channel::default();
        c.join(1, true);
        c.join(2, false);
        c.set_online(3, true);
        let online = |c: &Channel| {
            let mut v: Vec<u64> = c.online_members().collect();
            v.sort_unstable();
            v
        };
        assert_eq!(online(&c), vec![1], "non-members never count");
        c.set_online(2, true);
        c.set_online(1, false);
        assert_eq!(online(&c), vec![2]);
        c.leave(2);
        assert!(online(&c).is_empty());
        c.join(2, false);
        assert!(
            online(&c).is_empty(),
            "rejoining starts from what the caller says"
        );
    }
}
