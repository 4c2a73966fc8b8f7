//! Who is online in the rooms a shard hosts, sans-io: the fan-out set of
//! each room (its members with at least one live session) and, for users
//! owned by other shards, their sessions and which of this shard's rooms
//! they are in (the *presence* copy their owner sends).
//!
//! Memory is bounded by online users: an offline member of a room costs
//! nothing here (membership itself is in the store), and every change is
//! one set insert or remove per room concerned, so a JOIN costs the same
//! for a user's first room and their thousandth.

use std::collections::{HashMap, HashSet};

use crate::router::Sess;

/// A user owned by another shard, online, with rooms here.
#[derive(Debug, Default)]
struct Remote {
    sessions: Vec<Sess>,
    rooms: Vec<u64>,
}

/// The online index of one shard.
#[derive(Debug, Default)]
pub(super) struct Online {
    remote: HashMap<u64, Remote>,
    rooms: HashMap<u64, HashSet<u64>>,
    /// Set inserts and removes so far (the work JOINs and logins cost).
    pub(super) updates: u64,
}

impl Online {
    /// Marks `uin` online or offline in `room`.
    pub(super) fn mark(&mut self, room: u64, uin: u64, online: bool) {
        self.updates += 1;
        if online {
            self.rooms.entry(room).or_default().insert(uin);
        } else if let Some(set) = self.rooms.get_mut(&room) {
            set.remove(&uin);
            if set.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }

    /// The online members of `room`.
    pub(super) fn members(&self, room: u64) -> impl Iterator<Item = u64> + '_ {
        self.rooms.get(&room).into_iter().flatten().copied()
    }

    /// The sessions of remote user `uin` as last copied.
    pub(super) fn sessions(&self, uin: u64) -> &[Sess] {
        self.remote.get(&uin).map_or(&[], |r| &r.sessions)
    }

    /// A full presence copy: `uin`'s sessions and its rooms on this shard
    /// (no sessions: forget it).
    pub(super) fn set_remote(&mut self, uin: u64, sessions: Vec<Sess>, rooms: Vec<u64>) {
        let old = self.remote.remove(&uin).unwrap_or_default();
        let online = !sessions.is_empty();
        for &r in &old.rooms {
            if !online || !rooms.contains(&r) {
                self.mark(r, uin, false);
            }
        }
        if !online {
            return;
        }
        for &r in &rooms {
            if !old.rooms.contains(&r) {
                self.mark(r, uin, true);
            }
        }
        self.remote.insert(uin, Remote { sessions, rooms });
    }

    /// Remote user `uin` (with `sessions`) joined `room` here.
    pub(super) fn remote_join(&mut self, uin: u64, sessions: Vec<Sess>, room: u64) {
        if sessions.is_empty() {
            return;
        }
        let r = self.remote.entry(uin).or_default();
        r.sessions = sessions;
        if !r.rooms.contains(&room) {
            r.rooms.push(room);
            self.mark(room, uin, true);
        }
    }

    /// Remote user `uin` left `room` here.
    pub(super) fn remote_leave(&mut self, uin: u64, room: u64) {
        let Some(r) = self.remote.get_mut(&uin) else {
            return;
        };
        let before = r.rooms.len();
        r.rooms.retain(|&x| x != room);
        let left = r.rooms.len() < before;
        if r.rooms.is_empty() {
            self.remote.remove(&uin);
        }
        if left {
            self.mark(room, uin, false);
        }
    }

    /// Drops every copied session of gateway `gw`.
    pub(super) fn gateway_down(&mut self, gw: u64) {
        let mut offline = Vec::new();
        for (&uin, r) in &mut self.remote {
            r.sessions.retain(|s| s.gw != gw);
            if r.sessions.is_empty() {
                offline.push(uin);
            }
        }
        for uin in offline {
            self.set_remote(uin, Vec::new(), Vec::new());
        }
    }

    /// Rooms with an online member.
    pub(super) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Remote users copied here.
    pub(super) fn remote_count(&self) -> usize {
        self.remote.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::link::SessionRef;

    fn sess(gw: u64) -> Sess {
        Sess {
            gw,
            session: SessionRef { conn: 1, epoch: 1 },
            device: 1,
            login_ms: 1,
        }
    }

    fn members(o: &Online, room: u64) -> Vec<u64> {
        let mut v: Vec<u64> = o.members(room).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn presence_copies_follow_sessions_and_rooms() {
        let mut o = Online::default();
        o.set_remote(7, vec![sess(1)], vec![10, 11]);
        assert_eq!((members(&o, 10), members(&o, 11)), (vec![7], vec![7]));
        o.set_remote(7, vec![sess(1)], vec![11, 12]);
        assert_eq!(members(&o, 10), Vec::<u64>::new());
        assert_eq!(members(&o, 12), vec![7]);
        o.remote_join(7, vec![sess(2)], 13);
        assert_eq!(o.sessions(7), &[sess(2)]);
        assert_eq!(members(&o, 13), vec![7]);
        o.remote_leave(7, 11);
        assert_eq!(members(&o, 11), Vec::<u64>::new());
        o.gateway_down(2);
        assert_eq!(o.room_count(), 0, "offline users cost nothing");
        assert_eq!(o.remote_count(), 0);
    }

    #[test]
    fn a_join_costs_one_update_whatever_the_room_count() {
        let mut o = Online::default();
        o.remote_join(1, vec![sess(1)], 0);
        for room in 1..1_000 {
            let before = o.updates;
            o.remote_join(1, vec![sess(1)], room);
            assert_eq!(o.updates - before, 1, "room {room}");
        }
    }
}
