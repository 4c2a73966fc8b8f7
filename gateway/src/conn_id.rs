//! A connection's identity outside its worker: the (worker, slot) pair and
//! how it is packed into the link protocol's [`SessionRef`] (with the login
//! epoch, the fencing token). Every packing and unpacking of a
//! `SessionRef.conn` in the gateway goes through [`ConnId`]; nothing else
//! knows the layout.
//!
//! Layout of `SessionRef.conn`: the worker index in the high 32 bits, the
//! slab slot in the low 32. `SessionRef.epoch` is the session's `u32`
//! epoch, widened.

use proto::link::SessionRef;

/// One connection slot of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub worker: u32,
    pub slot: u32,
}

impl ConnId {
    /// Slot `slot` of worker `worker` (both fit in 32 bits: a worker index
    /// is below the thread count, a slot below the connection limit).
    pub fn new(worker: usize, slot: usize) -> ConnId {
        ConnId {
            worker: worker as u32,
            slot: slot as u32,
        }
    }

    /// The slab key of this slot.
    pub fn key(self) -> usize {
        self.slot as usize
    }

    /// The `SessionRef` of this slot's session at `epoch`.
    pub fn pack(self, epoch: u32) -> SessionRef {
        SessionRef {
            conn: (u64::from(self.worker) << 32) | u64::from(self.slot),
            epoch: u64::from(epoch),
        }
    }

    /// The slot a `SessionRef` names, and the epoch it was packed with.
    pub fn unpack(s: SessionRef) -> (ConnId, u64) {
        let id = ConnId {
            worker: (s.conn >> 32) as u32,
            slot: s.conn as u32,
        };
        (id, s.epoch)
    }

    /// The worker a `SessionRef` belongs to (the uplink routes by it).
    pub fn worker_of(s: SessionRef) -> usize {
        Self::unpack(s).0.worker as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_agree_and_keep_the_documented_layout() {
        let id = ConnId::new(3, 0xdead_beef);
        let s = id.pack(u32::MAX);
        assert_eq!(s.conn, 0x0000_0003_dead_beef);
        assert_eq!(s.epoch, u64::from(u32::MAX));
        assert_eq!(ConnId::unpack(s), (id, u64::from(u32::MAX)));
        assert_eq!(ConnId::worker_of(s), 3);
        assert_eq!(id.key(), 0xdead_beef);
    }
}
