//! Store tests: every read answers the same from both implementations
//! after the same batches; on disk, data survives reopening, retention
//! reclaims, a torn journal tail is recovered from, corruption in the
//! middle is refused naming the file, and a second opener is refused.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::*;
use crate::channel::Retention;

const RET: Retention = Retention {
    max_count: 1_000,
    max_age_ms: 86_400_000,
};

fn frame(i: u64) -> Bytes {
    Bytes::from(format!("frame-{i}"))
}

/// A mix of every op, as shard turns would write them.
fn batches() -> Vec<Batch> {
    let mut out = Vec::new();
    for turn in 0..5u64 {
        let mut b = Batch::default();
        for i in 1..=4 {
            let id = turn * 4 + i;
            b.push(Op::Message {
                channel: 7,
                msg_id: id,
                at_ms: 1_000 + id,
                frame: frame(id),
            });
            b.push(Op::Head {
                channel: 7,
                newest: id,
            });
            // Two channel shards' records of one device.
            b.push(Op::Dedup {
                uin: 1,
                device: 2,
                shard: (id % 2) as u16,
                cmid: 100 + id,
                msg_id: id,
            });
        }
        b.push(Op::Join {
            uin: 10 + turn,
            room: 7,
        });
        b.push(Op::Join {
            uin: 1,
            room: 50 + turn,
        });
        out.push(b);
    }
    let mut b = Batch::default();
    b.push(Op::Leave { uin: 12, room: 7 });
    b.push(Op::Leave { uin: 1, room: 52 });
    // A later record of the same shard replaces the earlier one.
    b.push(Op::Dedup {
        uin: 3,
        device: 1,
        shard: 0,
        cmid: 6,
        msg_id: 10,
    });
    b.push(Op::Dedup {
        uin: 3,
        device: 1,
        shard: 0,
        cmid: 7,
        msg_id: 11,
    });
    assert_eq!(b.ops().len(), 3, "one dedup record per device per batch");
    out.push(b);
    out
}

/// Checks every read against what [`batches`] wrote.
fn check_reads(s: &dyn Store) {
    assert_eq!(s.head(7).unwrap(), 20);
    assert_eq!(s.head(8).unwrap(), 0);
    let ids: Vec<u64> = s
        .messages(7, 0, 20)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    let m = &s.messages(7, 6, 6).unwrap()[0];
    assert_eq!((m.msg_id, m.at_ms, m.frame.clone()), (6, 1_006, frame(6)));
    assert_eq!(s.messages(7, 21, 30).unwrap(), vec![]);
    assert_eq!(s.messages(7, 5, 4).unwrap(), vec![]);
    assert_eq!(s.rooms(1).unwrap(), vec![50, 51, 53, 54]);
    assert_eq!(s.rooms(2).unwrap(), Vec::<u64>::new());
    assert_eq!(s.members(7, 0, 100).unwrap(), vec![10, 11, 13, 14]);
    assert_eq!(s.members(7, 10, 2).unwrap(), vec![11, 13], "a page");
    assert_eq!(s.members(7, u64::MAX, 2).unwrap(), Vec::<u64>::new());
    assert_eq!(
        s.dedup(1, 2).unwrap(),
        Some((120, 20)),
        "the largest record"
    );
    assert_eq!(s.dedup(3, 1).unwrap(), Some((7, 11)));
    assert_eq!(s.dedup(3, 2).unwrap(), None);
}

#[test]
fn memory_store_round_trips() {
    let s = MemStore::default();
    for b in batches() {
        s.write(&b).unwrap();
    }
    check_reads(&s);
    assert!(!s.durable());
}

#[test]
fn disk_store_round_trips_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FjallStore::open(dir.path(), RET).unwrap();
        for b in batches() {
            s.write(&b).unwrap();
        }
        s.sync().unwrap();
        check_reads(&s);
        assert!(s.durable());
        assert!(s.disk_bytes() > 0);
    }
    let s = FjallStore::open(dir.path(), RET).unwrap();
    check_reads(&s);
    assert!(s.repaired.is_empty(), "a clean close leaves no torn tail");
}

#[test]
fn a_second_opener_is_refused_naming_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FjallStore::open(dir.path(), RET).unwrap();
    let err = FjallStore::open(dir.path(), RET).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OpenError::Locked { .. }), "{msg}");
    assert!(msg.contains("logic.lock"), "{msg}");
}

#[test]
fn head_and_dedup_are_written_once_per_batch() {
    let mut b = Batch::default();
    for id in 1..=100 {
        b.push(Op::Message {
            channel: 1,
            msg_id: id,
            at_ms: 0,
            frame: frame(id),
        });
        b.push(Op::Head {
            channel: 1,
            newest: id,
        });
    }
    assert_eq!(b.ops().len(), 101);
    assert_eq!(
        b.ops()[1],
        Op::Head {
            channel: 1,
            newest: 100
        },
        "the latest value, where the first was"
    );
    b.clear();
    assert!(b.is_empty());
}

fn many(channel: u64, n: u64, at_ms: u64) -> Batch {
    let mut b = Batch::default();
    for id in 1..=n {
        b.push(Op::Message {
            channel,
            msg_id: id,
            at_ms,
            frame: frame(id),
        });
        b.push(Op::Head {
            channel,
            newest: id,
        });
    }
    b
}

#[test]
fn count_retention_on_disk_and_in_memory() {
    let ret = Retention {
        max_count: 3,
        max_age_ms: 86_400_000,
    };
    let now = crate::worker::now_ms();
    let mem = MemStore::new(ret);
    mem.write(&many(4, 10, now)).unwrap();
    let ids: Vec<u64> = mem
        .messages(4, 1, 10)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids, vec![8, 9, 10]);
    let dir = tempfile::tempdir().unwrap();
    let disk = FjallStore::open(dir.path(), ret).unwrap();
    disk.write(&many(4, 10, now)).unwrap();
    disk.compact().unwrap();
    let ids: Vec<u64> = disk
        .messages(4, 1, 10)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids, vec![8, 9, 10]);
    assert_eq!(disk.head(4).unwrap(), 10, "the counter stays");
}

#[test]
fn age_retention_is_reclaimed_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let ret = Retention {
        max_count: 1_000,
        max_age_ms: 60_000,
    };
    let s = FjallStore::open(dir.path(), ret).unwrap();
    let now = crate::worker::now_ms();
    let mut b = Batch::default();
    for id in 1..=10 {
        // 1..=5 are two minutes old, 6..=10 fresh.
        let at_ms = if id <= 5 { now - 120_000 } else { now };
        b.push(Op::Message {
            channel: 3,
            msg_id: id,
            at_ms,
            frame: frame(id),
        });
    }
    b.push(Op::Head {
        channel: 3,
        newest: 10,
    });
    s.write(&b).unwrap();
    assert_eq!(s.messages(3, 1, 10).unwrap().len(), 10, "not compacted yet");
    s.compact().unwrap();
    let ids: Vec<u64> = s
        .messages(3, 1, 10)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids, vec![6, 7, 8, 9, 10]);
}

/// Opens a store in `dir`, writes `n` single-message batches, closes it
/// and returns the newest journal file.
fn journal_with(dir: &Path, n: u64) -> PathBuf {
    {
        let s = FjallStore::open(dir, RET).unwrap();
        for id in 1..=n {
            let mut b = Batch::default();
            b.push(Op::Message {
                channel: 1,
                msg_id: id,
                at_ms: crate::worker::now_ms(),
                frame: frame(id),
            });
            b.push(Op::Head {
                channel: 1,
                newest: id,
            });
            s.write(&b).unwrap();
        }
    }
    let mut journals: Vec<PathBuf> = std::fs::read_dir(dir.join("fjall"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .collect();
    journals.sort();
    let j = journals.pop().expect("a journal");
    let bytes = std::fs::read(&j).unwrap();
    assert!(
        bytes.windows(7).any(|w| w == b"frame-1"),
        "the messages are still in the journal (not flushed away)"
    );
    j
}

fn data_end(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1)
}

#[test]
fn a_torn_journal_tail_is_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 20);
    // A crash in the middle of writing a batch: its start marker and half
    // an item reached the file, nothing else.
    let mut bytes = std::fs::read(&j).unwrap();
    let end = data_end(&bytes);
    let torn = [1u8, 1, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 7, 0, 0];
    if bytes.len() < end + torn.len() {
        bytes.resize(end + torn.len(), 0);
    }
    bytes[end..end + torn.len()].copy_from_slice(&torn);
    std::fs::write(&j, &bytes).unwrap();

    let s = FjallStore::open(dir.path(), RET).unwrap();
    assert_eq!(s.repaired.len(), 1, "{:?}", s.repaired);
    assert_eq!(s.repaired[0].offset, end as u64);
    assert_eq!(s.head(1).unwrap(), 20, "nothing acknowledged was lost");
    assert_eq!(s.messages(1, 1, 20).unwrap().len(), 20);
    // And it goes on working across another restart.
    let mut b = Batch::default();
    b.push(Op::Head {
        channel: 1,
        newest: 21,
    });
    s.write(&b).unwrap();
    drop(s);
    let s = FjallStore::open(dir.path(), RET).unwrap();
    assert_eq!(s.head(1).unwrap(), 21);
    assert!(s.repaired.is_empty());
}

#[test]
fn a_torn_tail_with_a_bad_checksum_is_recovered_from() {
    // A power loss can persist a batch's end but not all of its middle.
    let dir = tempfile::tempdir().unwrap();
    let j = journal_with(dir.path(), 5);
    let mut bytes = std::fs::read(&j).unwrap();
    let end = data_end(&bytes);
    // The last batch's frame text sits a few bytes before its end marker.
    let last_frame = bytes[..end]
        .windows(7)
        .rposition(|w| w == b"frame-5")
        .expect("last frame");
    bytes[last_frame] ^= 0xff;
    std::fs::write(&j, &bytes).unwrap();
    let s = FjallStore::open(dir.path(), RET).unwrap();
    assert_eq!(s.repaired.len(), 1);
    assert_eq!(
        s.head(1).unwrap(),
        4,
        "only the torn, never-synced batch is gone"
    );
}

#[test]
fn corruption_in_the_middle_is_refused_naming_the_file() {
    for (what, flip_tag) in [("checksum", false), ("tag", true)] {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with(dir.path(), 20);
        let mut bytes = std::fs::read(&j).unwrap();
        let at = bytes
            .windows(7)
            .position(|w| w == b"frame-3")
            .expect("frame 3");
        if flip_tag {
            // The start marker of batch 1 is at offset 0; corrupt it: fjall
            // alone would truncate the journal here and drop all 20.
            bytes[0] = 0x7f;
        } else {
            bytes[at] ^= 0xff;
        }
        let before = bytes.clone();
        std::fs::write(&j, &bytes).unwrap();
        let err = FjallStore::open(dir.path(), RET).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, OpenError::Journal(JournalProblem::Corrupt { .. })),
            "{what}: {msg}"
        );
        assert!(msg.contains(&j.display().to_string()), "{what}: {msg}");
        assert_eq!(
            std::fs::read(&j).unwrap(),
            before,
            "{what}: the journal is left as it was"
        );
    }
}

#[test]
fn the_journal_check_reads_real_fjall_journals() {
    // Many batches of mixed sizes (one large enough for fjall to compress
    // it in the journal): all valid, nothing to repair.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FjallStore::open(dir.path(), RET).unwrap();
        for b in batches() {
            s.write(&b).unwrap();
        }
        let mut b = Batch::default();
        b.push(Op::Message {
            channel: 9,
            msg_id: 1,
            at_ms: 1,
            frame: Bytes::from(vec![b'x'; 20_000]),
        });
        s.write(&b).unwrap();
    }
    assert_eq!(check_journals(&dir.path().join("fjall")).unwrap(), vec![]);
    let s = FjallStore::open(dir.path(), RET).unwrap();
    assert_eq!(s.messages(9, 1, 1).unwrap()[0].frame.len(), 20_000);
}
