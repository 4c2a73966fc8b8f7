//! The `msgs` keyspace's run format: a batch's consecutive messages of a
//! channel share one key, reads split runs at any id, retention trims or
//! drops whole runs, and data directories written one key per message
//! (before runs) still read back, alone and mixed with runs.

use bytes::Bytes;

use super::runs::MAX_RUN_MSGS;
use super::*;
use crate::channel::Retention;

/// Keeps everything (the messages here are dated 1970).
const RET: Retention = Retention {
    max_count: 100_000,
    max_age_ms: u64::MAX,
};

fn frame(i: u64) -> Bytes {
    Bytes::from(format!("frame-{i}"))
}

fn msg(channel: u64, msg_id: u64, at_ms: u64) -> Op {
    Op::Message {
        channel,
        msg_id,
        at_ms,
        frame: frame(msg_id),
    }
}

fn ids(s: &dyn Store, ch: u64, from: u64, to: u64) -> Vec<u64> {
    let got = s.messages(ch, from, to).unwrap();
    for m in &got {
        assert_eq!(m.frame, frame(m.msg_id), "message {} body", m.msg_id);
        assert_eq!(m.at_ms, 1_000 + m.msg_id, "message {} time", m.msg_id);
    }
    got.iter().map(|m| m.msg_id).collect()
}

#[test]
fn a_batch_stores_one_key_per_channel_run_and_reads_split_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path(), RET).unwrap();
    // Two channels interleaved, as a turn of two senders writes them.
    let mut b = Batch::default();
    for id in 1..=10 {
        b.push(msg(5, id, 1_000 + id));
        b.push(msg(6, id, 1_000 + id));
    }
    s.write(&b).unwrap();
    assert_eq!(s.message_keys(), 2, "one run per channel");
    let mut b = Batch::default();
    for id in 11..=20 {
        b.push(msg(5, id, 1_000 + id));
    }
    s.write(&b).unwrap();
    assert_eq!(s.message_keys(), 3);
    assert_eq!(ids(&s, 5, 1, 20), (1..=20).collect::<Vec<_>>());
    assert_eq!(ids(&s, 5, 4, 4), vec![4], "inside a run");
    assert_eq!(
        ids(&s, 5, 8, 13),
        (8..=13).collect::<Vec<_>>(),
        "across runs"
    );
    assert_eq!(ids(&s, 5, 11, 11), vec![11], "a run's first");
    assert_eq!(ids(&s, 5, 20, 99), vec![20]);
    assert_eq!(ids(&s, 5, 21, 99), Vec::<u64>::new());
    assert_eq!(ids(&s, 6, 0, 99), (1..=10).collect::<Vec<_>>());
    assert_eq!(ids(&s, 4, 0, 99), Vec::<u64>::new(), "the channel before");
    assert_eq!(ids(&s, 7, 0, 99), Vec::<u64>::new(), "the channel after");
    drop(s);
    let s = FjallStore::open(dir.path(), RET).unwrap();
    assert_eq!(ids(&s, 5, 9, 12), vec![9, 10, 11, 12], "after reopening");
}

#[test]
fn long_runs_are_split_and_gaps_start_a_new_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path(), RET).unwrap();
    let n = MAX_RUN_MSGS as u64 * 2 + 3;
    let mut b = Batch::default();
    for id in 1..=n {
        b.push(msg(9, id, 1_000 + id));
    }
    // A gap (ids of another batch in between).
    b.push(msg(9, n + 5, 1_000 + n + 5));
    s.write(&b).unwrap();
    assert_eq!(s.message_keys(), 4);
    let mut want: Vec<u64> = (1..=n).collect();
    want.push(n + 5);
    assert_eq!(ids(&s, 9, 1, n + 10), want);
    let m = MAX_RUN_MSGS as u64;
    assert_eq!(ids(&s, 9, m, m + 1), vec![m, m + 1], "across a split");
}

#[test]
fn a_data_dir_in_the_old_one_key_per_message_format_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FjallStore::open(dir.path(), RET).unwrap();
        for id in 1..=5 {
            s.write_old_format(3, id, 1_000 + id, &frame(id)).unwrap();
        }
        let mut b = Batch::default();
        b.push(Op::Head {
            channel: 3,
            newest: 5,
        });
        s.write(&b).unwrap();
    }
    // Reopened by the new code, which appends runs after the old keys.
    let s = FjallStore::open(dir.path(), RET).unwrap();
    assert_eq!(s.message_keys(), 5, "five old keys");
    assert_eq!(ids(&s, 3, 1, 5), vec![1, 2, 3, 4, 5]);
    let mut b = Batch::default();
    for id in 6..=9 {
        b.push(msg(3, id, 1_000 + id));
    }
    s.write(&b).unwrap();
    assert_eq!(s.message_keys(), 6, "plus one run");
    assert_eq!(ids(&s, 3, 1, 9), (1..=9).collect::<Vec<_>>());
    assert_eq!(ids(&s, 3, 4, 7), vec![4, 5, 6, 7], "old then new");
    assert_eq!(ids(&s, 3, 7, 7), vec![7]);
    assert_eq!(ids(&s, 3, 2, 2), vec![2]);
    s.compact().unwrap();
    assert_eq!(ids(&s, 3, 1, 9), (1..=9).collect::<Vec<_>>(), "compacted");
}

#[test]
fn count_retention_trims_runs_and_drops_old_keys() {
    let ret = Retention {
        max_count: 4,
        max_age_ms: 86_400_000,
    };
    let now = crate::worker::now_ms();
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path(), ret).unwrap();
    for id in 1..=3 {
        s.write_old_format(2, id, now, &frame(id)).unwrap();
    }
    let mut b = Batch::default();
    for id in 4..=6 {
        b.push(msg(2, id, now));
    }
    s.write(&b).unwrap();
    let mut b = Batch::default();
    for id in 7..=10 {
        b.push(msg(2, id, now));
    }
    b.push(Op::Head {
        channel: 2,
        newest: 10,
    });
    s.write(&b).unwrap();
    assert_eq!(s.message_keys(), 5);
    s.compact().unwrap();
    // Newest 4 kept: 7..=10; run 4..=6 and the old keys go entirely.
    assert_eq!(s.message_keys(), 1, "one run left");
    let got: Vec<u64> = s
        .messages(2, 1, 10)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(got, vec![7, 8, 9, 10]);
    // A run straddling the limit is trimmed, and still reads.
    let mut b = Batch::default();
    for id in 11..=12 {
        b.push(msg(2, id, now));
    }
    b.push(Op::Head {
        channel: 2,
        newest: 12,
    });
    s.write(&b).unwrap();
    s.compact().unwrap();
    let got: Vec<u64> = s
        .messages(2, 1, 12)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(got, vec![9, 10, 11, 12]);
    let got: Vec<u64> = s
        .messages(2, 9, 9)
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(got, vec![9], "the trimmed run's new first");
    let got = s.messages(2, 8, 8).unwrap();
    assert_eq!(got, vec![], "trimmed away");
}

#[test]
fn a_merged_batch_keeps_each_shards_dedup_record_and_the_last_membership() {
    let mut a = Batch::default();
    a.push(Op::Dedup {
        uin: 1,
        device: 1,
        shard: 0,
        cmid: 5,
        msg_id: 5,
    });
    a.push(Op::Join { uin: 1, room: 9 });
    let mut b = Batch::default();
    b.push(Op::Dedup {
        uin: 1,
        device: 1,
        shard: 1,
        cmid: 6,
        msg_id: 2,
    });
    b.push(Op::Leave { uin: 1, room: 9 });
    a.extend(b);
    assert_eq!(a.ops().len(), 3, "two shards' records, one membership");
    assert_eq!(a.ops()[1], Op::Leave { uin: 1, room: 9 });
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path(), RET).unwrap();
    s.write(&a).unwrap();
    assert_eq!(s.rooms(1).unwrap(), Vec::<u64>::new());
    assert_eq!(s.dedup(1, 1).unwrap(), Some((6, 2)));
}

#[test]
fn idle_rotates_written_memtables_so_they_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path(), RET).unwrap();
    let mut b = Batch::default();
    b.push(msg(1, 1, 1_001));
    b.push(Op::Head {
        channel: 1,
        newest: 1,
    });
    s.write(&b).unwrap();
    assert_eq!(s.table_count(), 0, "still in the memtables");
    s.idle().unwrap();
    let t0 = std::time::Instant::now();
    while s.table_count() < 2 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "both keyspaces flushed after idle"
        );
        std::thread::yield_now();
    }
    assert_eq!(ids(&s, 1, 1, 1), vec![1], "still readable");
}
