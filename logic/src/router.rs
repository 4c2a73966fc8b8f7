//! The session router, sans-io: `uin` -> live sessions (gateway, connection,
//! device, epoch), and `uin` -> joined rooms. One shard owns the users whose
//! uin hashes to it.
//!
//! Rules (PROTOCOL.md rule 3 and the link protocol's fencing):
//! - one (`uin`, `device`) has at most one session: an `Open` for a pair
//!   already held elsewhere replaces it and the older one is kicked, on
//!   whichever gateway it lives;
//! - on the same gateway, epochs order logins: an `Open` carrying an epoch
//!   older than the held session's is itself the stale one and is kicked;
//!   a repeated `Open` of the held session (a re-announce) changes nothing;
//! - a `Close` removes a session only if gateway, connection and epoch all
//!   match, so a late notice from an old login never removes a newer one;
//! - a gateway whose link is gone loses all its sessions.

use std::collections::HashMap;

use proto::link::SessionRef;

/// One live session as the logic tier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sess {
    pub gw: u64,
    pub session: SessionRef,
    pub device: u32,
}

/// What an `Open` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Opened {
    /// A new session is routed and nothing was displaced.
    New,
    /// The exact session was already routed (re-announce): no change.
    Unchanged,
    /// The new session is routed; this older one must be kicked.
    Replaced(Sess),
    /// The announced session is older than the one held; kick it instead.
    Stale(Sess),
}

#[derive(Debug, Default)]
struct User {
    sessions: Vec<Sess>,
    /// Sorted; a plain vector because most users are in a few rooms (a
    /// one-element `BTreeSet` costs a whole B-tree node).
    rooms: Vec<u64>,
}

/// Routes users to their sessions and remembers their rooms.
#[derive(Debug, Default)]
pub struct Router {
    users: HashMap<u64, User>,
    sessions: usize,
}

impl Router {
    /// A session logged in (or was re-announced).
    pub fn open(&mut self, uin: u64, new: Sess) -> Opened {
        let user = self.users.entry(uin).or_default();
        let Some(held) = user.sessions.iter_mut().find(|s| s.device == new.device) else {
            user.sessions.push(new);
            self.sessions += 1;
            return Opened::New;
        };
        if *held == new {
            return Opened::Unchanged;
        }
        if held.gw == new.gw && held.session.epoch > new.session.epoch {
            return Opened::Stale(new);
        }
        let old = std::mem::replace(held, new);
        Opened::Replaced(old)
    }

    /// A session re-announced after a link reconnect: like [`Router::open`],
    /// except that it loses to a session of the same pair held by another
    /// gateway (that login happened while this one's link was down).
    pub fn reopen(&mut self, uin: u64, sess: Sess) -> Opened {
        let held_elsewhere = self
            .users
            .get(&uin)
            .and_then(|u| u.sessions.iter().find(|s| s.device == sess.device))
            .is_some_and(|held| held.gw != sess.gw);
        if held_elsewhere {
            return Opened::Stale(sess);
        }
        self.open(uin, sess)
    }

    /// A session ended; true if it was the routed one and is now removed.
    pub fn close(&mut self, uin: u64, gone: Sess) -> bool {
        let Some(user) = self.users.get_mut(&uin) else {
            return false;
        };
        let before = user.sessions.len();
        user.sessions.retain(|s| *s != gone);
        let removed = user.sessions.len() < before;
        if removed {
            self.sessions -= 1;
            self.forget_if_empty(uin);
        }
        removed
    }

    /// Drops every session of gateway `gw`; returns the uins affected.
    pub fn gateway_down(&mut self, gw: u64) -> Vec<u64> {
        let mut affected = Vec::new();
        for (uin, user) in &mut self.users {
            let before = user.sessions.len();
            user.sessions.retain(|s| s.gw != gw);
            if user.sessions.len() < before {
                self.sessions -= before - user.sessions.len();
                affected.push(*uin);
            }
        }
        for uin in &affected {
            self.forget_if_empty(*uin);
        }
        affected
    }

    /// The live sessions of `uin`.
    pub fn sessions(&self, uin: u64) -> &[Sess] {
        self.users.get(&uin).map_or(&[], |u| &u.sessions)
    }

    /// Records that `uin` joined `room`; true if it was not a member.
    pub fn join(&mut self, uin: u64, room: u64) -> bool {
        let rooms = &mut self.users.entry(uin).or_default().rooms;
        match rooms.binary_search(&room) {
            Ok(_) => false,
            Err(i) => {
                rooms.insert(i, room);
                true
            }
        }
    }

    /// Records that `uin` left `room`; true if it was a member.
    pub fn leave(&mut self, uin: u64, room: u64) -> bool {
        let Some(user) = self.users.get_mut(&uin) else {
            return false;
        };
        let was = match user.rooms.binary_search(&room) {
            Ok(i) => {
                user.rooms.remove(i);
                true
            }
            Err(_) => false,
        };
        self.forget_if_empty(uin);
        was
    }

    /// Whether `uin` has joined `room`.
    pub fn is_member(&self, uin: u64, room: u64) -> bool {
        self.users
            .get(&uin)
            .is_some_and(|u| u.rooms.binary_search(&room).is_ok())
    }

    /// The rooms `uin` has joined, in id order.
    pub fn rooms(&self, uin: u64) -> impl Iterator<Item = u64> + '_ {
        self.users
            .get(&uin)
            .into_iter()
            .flat_map(|u| u.rooms.iter().copied())
    }

    /// Number of routed sessions.
    pub fn session_count(&self) -> usize {
        self.sessions
    }

    fn forget_if_empty(&mut self, uin: u64) {
        if self
            .users
            .get(&uin)
            .is_some_and(|u| u.sessions.is_empty() && u.rooms.is_empty())
        {
            self.users.remove(&uin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(gw: u64, conn: u64, epoch: u64, device: u32) -> Sess {
        Sess {
            gw,
            session: SessionRef { conn, epoch },
            device,
        }
    }

    #[test]
    fn devices_are_independent_sessions() {
        let mut r = Router::default();
        assert_eq!(r.open(1, s(1, 1, 1, 1)), Opened::New);
        assert_eq!(r.open(1, s(1, 2, 2, 2)), Opened::New);
        assert_eq!(r.sessions(1).len(), 2);
        assert_eq!(r.session_count(), 2);
    }

    #[test]
    fn duplicate_login_on_another_gateway_replaces_the_older() {
        let mut r = Router::default();
        let old = s(1, 5, 9, 1);
        let new = s(2, 1, 1, 1);
        assert_eq!(r.open(7, old), Opened::New);
        assert_eq!(r.open(7, new), Opened::Replaced(old));
        assert_eq!(r.sessions(7), &[new]);
        assert_eq!(r.session_count(), 1);
        assert!(!r.close(7, old), "the old gateway's Close is stale");
        assert_eq!(r.sessions(7), &[new]);
    }

    #[test]
    fn epochs_fence_on_one_gateway() {
        let mut r = Router::default();
        let newer = s(1, 3, 10, 1);
        let older = s(1, 2, 9, 1);
        assert_eq!(r.open(7, newer), Opened::New);
        assert_eq!(r.open(7, older), Opened::Stale(older));
        assert_eq!(r.sessions(7), &[newer]);
        assert!(!r.close(7, older));
        assert!(!r.close(7, s(1, 3, 9, 1)), "same conn, old epoch");
        assert!(r.close(7, newer));
        assert!(r.sessions(7).is_empty());
        assert_eq!(r.session_count(), 0);
    }

    #[test]
    fn reannounce_changes_nothing() {
        let mut r = Router::default();
        assert_eq!(r.open(7, s(1, 1, 1, 1)), Opened::New);
        assert_eq!(r.open(7, s(1, 1, 1, 1)), Opened::Unchanged);
        assert_eq!(r.reopen(7, s(1, 1, 1, 1)), Opened::Unchanged);
        assert_eq!(r.session_count(), 1);
    }

    #[test]
    fn reopen_loses_to_a_login_on_another_gateway() {
        let mut r = Router::default();
        let newer = s(2, 1, 1, 1);
        let reannounced = s(1, 5, 5, 1);
        assert_eq!(r.open(7, newer), Opened::New);
        assert_eq!(r.reopen(7, reannounced), Opened::Stale(reannounced));
        assert_eq!(r.sessions(7), &[newer]);
        assert_eq!(
            r.reopen(8, reannounced),
            Opened::New,
            "nothing held: routed"
        );
        let newest_here = s(1, 6, 6, 1);
        assert_eq!(
            r.reopen(8, newest_here),
            Opened::Replaced(reannounced),
            "same gateway: epochs decide"
        );
    }

    #[test]
    fn gateway_down_drops_only_its_sessions() {
        let mut r = Router::default();
        let _ = r.open(1, s(1, 1, 1, 1));
        let _ = r.open(1, s(2, 1, 1, 2));
        let _ = r.open(2, s(1, 2, 2, 1));
        let mut affected = r.gateway_down(1);
        affected.sort_unstable();
        assert_eq!(affected, vec![1, 2]);
        assert_eq!(r.sessions(1), &[s(2, 1, 1, 2)]);
        assert!(r.sessions(2).is_empty());
        assert_eq!(r.session_count(), 1);
    }

    #[test]
    fn rooms_outlive_sessions() {
        let mut r = Router::default();
        let a = s(1, 1, 1, 1);
        let _ = r.open(1, a);
        assert!(r.join(1, 100));
        assert!(!r.join(1, 100));
        assert!(r.join(1, 50));
        assert!(r.close(1, a));
        assert!(r.is_member(1, 100));
        assert_eq!(r.rooms(1).collect::<Vec<_>>(), vec![50, 100]);
        assert!(r.leave(1, 100));
        assert!(!r.leave(1, 100));
        assert!(!r.is_member(1, 100));
    }
}
