//! The session router, sans-io: `uin` -> live sessions (gateway, connection,
//! device, epoch), and `uin` -> joined rooms. One shard owns the users whose
//! uin hashes to it.
//!
//! Rules (PROTOCOL.md rule 3 and the link protocol's fencing):
//! - one (`uin`, `device`) has at most one session, the one with the
//!   newest login: an `Open` or `Reopen` whose `login_ms` is newer than the
//!   held session's replaces it (the held one is kicked, on whichever
//!   gateway it lives); one whose login is older is itself kicked. So the
//!   outcome does not depend on the order in which gateways announce or
//!   re-announce (after a logic restart, or a link outage during which the
//!   same device logged in elsewhere);
//! - between equal login times, an `Open` (a login happening now) beats
//!   the held session and a `Reopen` loses to it;
//! - a repeated announce of the held session changes nothing;
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
    /// When the login happened (Unix ms, by the gateway's clock).
    pub login_ms: u64,
}

impl Sess {
    /// The same session: gateway, connection and epoch (`login_ms` is what
    /// the session says about itself, not part of its identity).
    pub fn same(&self, other: &Sess) -> bool {
        self.gw == other.gw && self.session == other.session
    }
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
    /// A fresh login (`Open`): routed unless the held session of the same
    /// pair logged in later.
    pub fn open(&mut self, uin: u64, new: Sess) -> Opened {
        self.announce(uin, new, true)
    }

    /// A session re-announced after a link reconnect (`Reopen`): like
    /// [`Router::open`], but it loses a tie of login times.
    pub fn reopen(&mut self, uin: u64, sess: Sess) -> Opened {
        self.announce(uin, sess, false)
    }

    fn announce(&mut self, uin: u64, new: Sess, fresh: bool) -> Opened {
        let user = self.users.entry(uin).or_default();
        let Some(held) = user.sessions.iter_mut().find(|s| s.device == new.device) else {
            user.sessions.push(new);
            self.sessions += 1;
            return Opened::New;
        };
        if held.same(&new) {
            return Opened::Unchanged;
        }
        let newer = match new.login_ms.cmp(&held.login_ms) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => fresh,
        };
        if !newer {
            return Opened::Stale(new);
        }
        let old = std::mem::replace(held, new);
        Opened::Replaced(old)
    }

    /// A session ended; true if it was the routed one and is now removed.
    pub fn close(&mut self, uin: u64, gone: Sess) -> bool {
        let Some(user) = self.users.get_mut(&uin) else {
            return false;
        };
        let before = user.sessions.len();
        user.sessions.retain(|s| !s.same(&gone));
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

    /// A session logged in at `login_ms` (its epoch, for brevity).
    fn s(gw: u64, conn: u64, epoch: u64, device: u32) -> Sess {
        Sess {
            gw,
            session: SessionRef { conn, epoch },
            device,
            login_ms: epoch,
        }
    }

    fn at(mut s: Sess, login_ms: u64) -> Sess {
        s.login_ms = login_ms;
        s
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
        let new = s(2, 1, 10, 1);
        assert_eq!(r.open(7, old), Opened::New);
        assert_eq!(r.open(7, new), Opened::Replaced(old));
        assert_eq!(r.sessions(7), &[new]);
        assert_eq!(r.session_count(), 1);
        assert!(!r.close(7, old), "the old gateway's Close is stale");
        assert_eq!(r.sessions(7), &[new]);
    }

    #[test]
    fn an_older_login_never_displaces_a_newer_one() {
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
    fn logins_on_two_workers_of_one_gateway_order_by_login_time() {
        // Workers number their epochs independently, so a newer login on
        // worker 1 may carry a smaller epoch than an older one on worker 0.
        let mut r = Router::default();
        let older = at(s(1, 5, 500, 1), 1_000);
        let newer = at(s(1, (1 << 32) | 5, 3, 1), 2_000);
        assert_eq!(r.open(7, older), Opened::New);
        assert_eq!(r.open(7, newer), Opened::Replaced(older));
        assert_eq!(r.sessions(7), &[newer]);
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
    fn the_newest_login_wins_whatever_order_the_reannounces_come_in() {
        // Logged in on gateway 1 at 100; the logic tier went away; the same
        // device logged in on gateway 2 at 200; both re-announce.
        let a = at(s(1, 5, 5, 1), 100);
        let b = at(s(2, 1, 1, 1), 200);
        let mut r = Router::default();
        assert_eq!(r.reopen(7, a), Opened::New);
        assert_eq!(r.reopen(7, b), Opened::Replaced(a));
        assert_eq!(r.sessions(7), &[b]);
        let mut r = Router::default();
        assert_eq!(r.reopen(7, b), Opened::New);
        assert_eq!(r.reopen(7, a), Opened::Stale(a));
        assert_eq!(r.sessions(7), &[b]);
        // A login made during the outage, announced with Open once its own
        // link is back, against a re-announce of an older one: the same.
        let mut r = Router::default();
        assert_eq!(r.open(7, a), Opened::New);
        assert_eq!(r.reopen(7, b), Opened::Replaced(a));
        let mut r = Router::default();
        assert_eq!(r.reopen(7, b), Opened::New);
        assert_eq!(r.open(7, a), Opened::Stale(a));
    }

    #[test]
    fn equal_login_times_favour_a_fresh_open_over_a_reannounce() {
        let held = at(s(1, 5, 5, 1), 100);
        let other = at(s(2, 1, 1, 1), 100);
        let mut r = Router::default();
        assert_eq!(r.open(7, held), Opened::New);
        assert_eq!(r.reopen(7, other), Opened::Stale(other));
        assert_eq!(r.open(7, other), Opened::Replaced(held));
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
