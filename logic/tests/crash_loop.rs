//! Issue 11's crash loop: senders keep sending (each waits for its ACK
//! and, when the link dies or stays silent, retries with the same
//! `client_msg_id` after reconnecting) while the logic server is killed
//! with SIGKILL at random moments and started again on the same data
//! directory, alternating `--fsync batch` and `always`. After the last
//! restart: every acked message is stored exactly once, each channel's
//! ids run from 1 without a gap, no body is stored under two ids and no
//! id holds two bodies.
//!
//! CI runs a short variant (`MILLGATE_CRASH_KILLS`, default 5);
//! `scripts/crash-loop` runs the long one (25 kills) and prints the
//! counts.

mod common;
mod durable_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use durable_support::Durable;
use proto::codec::{self, Kind};
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb::{self, Status};

const SENDERS: u64 = 6;
/// Senders 0..3 write to room 77, the others to inboxes.
const ROOM: u64 = 77;

fn channel_of(sender: u64) -> u64 {
    if sender < 3 {
        ROOM
    } else {
        proto::inbox_of(1_000 + sender % 2)
    }
}

/// A minimal gateway link for one sender: blocking, with timeouts.
struct Link {
    stream: std::net::TcpStream,
    rbuf: BytesMut,
}

impl Link {
    fn connect(addr: SocketAddr, gw: u64, s: SessionRef, uin: u64) -> Option<Link> {
        let stream = std::net::TcpStream::connect(addr).ok()?;
        stream.set_nodelay(true).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok()?;
        let mut l = Link {
            stream,
            rbuf: BytesMut::new(),
        };
        let mut b = BytesMut::new();
        link::encode_hello(&mut b, gw, gw);
        link::encode_reopen(&mut b, s, uin, 1, 1);
        l.write(&b).then_some(l)
    }

    fn write(&mut self, b: &[u8]) -> bool {
        use std::io::Write;
        self.stream.write_all(b).is_ok()
    }

    /// The next link message within `timeout`, `None` on timeout or a
    /// dead link (`dead` set).
    fn recv(&mut self, timeout: Duration, dead: &mut bool) -> Option<LinkMsg> {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        loop {
            match link::decode(&mut self.rbuf, link::DEFAULT_MAX_LINK_FRAME) {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(e) => panic!("bad link bytes: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut buf = [0u8; 16384];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    *dead = true;
                    return None;
                }
                Ok(n) => self.rbuf.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    *dead = true;
                    return None;
                }
            }
        }
    }
}

/// What a sender saw acknowledged: (channel, msg_id, body).
type Acked = Vec<(u64, u64, String)>;

fn sender(i: u64, addr: SocketAddr, stop: &AtomicBool, acked: &Mutex<Acked>, retries: &AtomicU64) {
    let uin = 1_000 + i;
    let s = SessionRef { conn: i, epoch: 1 };
    let ch = channel_of(i);
    let gw = 0x100 + i;
    let mut link: Option<Link> = None;
    let mut cmid = 1u64;
    let mut joined = ch != ROOM;
    while !stop.load(Ordering::Relaxed) {
        let Some(l) = link.as_mut() else {
            link = Link::connect(addr, gw, s, uin);
            if link.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        };
        let mut f = BytesMut::new();
        let seq = cmid as u32;
        if joined {
            let req = pb::SendReq {
                channel: ch,
                client_msg_id: cmid,
                body: Bytes::from(format!("s{i}-c{cmid}")),
            };
            codec::encode(&mut f, Kind::Send, seq, &req);
        } else {
            codec::encode(&mut f, Kind::Join, seq, &pb::Join { channel: ch });
        }
        let mut b = BytesMut::new();
        link::encode_client(&mut b, s, uin, 1, &f);
        let mut dead = !l.write(&b);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut answered = false;
        while !dead && !answered && Instant::now() < deadline {
            let Some(LinkMsg::Deliver { targets, frame }) =
                l.recv(Duration::from_millis(200), &mut dead)
            else {
                continue;
            };
            if !targets.contains(&s) {
                continue;
            }
            let got = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
                .expect("client frame")
                .expect("whole");
            if got.seq != seq {
                continue;
            }
            match got.kind {
                Kind::JoinAck => {
                    let ack: pb::JoinAck = prost::Message::decode(got.body).expect("ack");
                    assert_eq!(ack.status, Status::Ok as i32);
                    joined = true;
                    answered = true;
                }
                Kind::SendAck => {
                    let ack: pb::SendAck = prost::Message::decode(got.body).expect("ack");
                    let ok = ack.status == Status::Ok as i32;
                    let dup = ack.status == Status::Duplicate as i32;
                    assert!(ok || dup, "sender {i} cmid {cmid}: {ack:?}");
                    assert_ne!(ack.msg_id, 0, "the latest retried is never below latest");
                    acked
                        .lock()
                        .expect("lock")
                        .push((ch, ack.msg_id, format!("s{i}-c{cmid}")));
                    cmid += 1;
                    answered = true;
                }
                _ => {}
            }
        }
        if !answered {
            // Unknown outcome: reconnect and retry the same request.
            retries.fetch_add(1, Ordering::Relaxed);
            link = None;
        }
    }
}

/// Reads every retained message of `ch` after a restart: (id, body).
fn stored(addr: SocketAddr, ch: u64) -> Vec<(u64, String)> {
    let uin = if ch == ROOM {
        1_000
    } else {
        ch & !proto::INBOX_BIT
    };
    let s = SessionRef {
        conn: 999,
        epoch: 1,
    };
    let mut l = Link::connect(addr, 0x900 + (ch & 0xff), s, uin).expect("connect");
    let mut f = BytesMut::new();
    let req = pb::SyncReq {
        heads: vec![pb::ChannelHead {
            channel: ch,
            msg_id: 0,
        }],
    };
    codec::encode(&mut f, Kind::Sync, 4242, &req);
    let mut b = BytesMut::new();
    link::encode_client(&mut b, s, uin, 1, &f);
    assert!(l.write(&b));
    let mut out = Vec::new();
    let mut dead = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "SYNC of {ch:#x} answered");
        let Some(LinkMsg::Deliver { frame, .. }) = l.recv(Duration::from_secs(1), &mut dead) else {
            assert!(!dead, "link died during the final SYNC");
            continue;
        };
        let got = codec::decode(&mut BytesMut::from(&frame[..]), 1 << 20)
            .expect("frame")
            .expect("whole");
        match got.kind {
            Kind::Push => {
                let p: pb::Push = prost::Message::decode(got.body).expect("push");
                if p.channel == ch {
                    out.push((p.msg_id, String::from_utf8(p.body.to_vec()).expect("utf-8")));
                }
            }
            Kind::SyncAck if got.seq == 4242 => return out,
            _ => {}
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills: u32 = std::env::var("MILLGATE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("dir");
    // Retention above anything the run can store, so SYNC shows all.
    let flags = |k: u32| -> Vec<&'static str> {
        let mode = if k.is_multiple_of(2) {
            "batch"
        } else {
            "always"
        };
        vec!["--fsync", mode, "--retention-count", "1000000"]
    };
    let mut logic = Durable::start(dir.path(), "127.0.0.1:0", &flags(0));
    let addr = logic.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (stop, acked, retries) = (stop.clone(), acked.clone(), retries.clone());
            std::thread::spawn(move || sender(i, addr, &stop, &acked, &retries))
        })
        .collect();
    // Random moments: a small xorshift seeded by the clock, printed so a
    // failing run can be told apart.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("crash loop seed {seed}");
    let mut restart_ms = Vec::new();
    for k in 1..=kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 900));
        logic.restart(&flags(k));
        restart_ms.push(logic.started_in.as_millis() as u64);
    }
    // Let the senders get a few more through on the last server.
    let before = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().expect("lock").len() < before + 20 {
        assert!(
            Instant::now() < deadline,
            "senders make progress after the last restart"
        );
        std::thread::sleep(Duration::from_millis(10)); // polling a shared counter
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("sender");
    }

    let acked = acked.lock().expect("lock").clone();
    let mut by_channel: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for (ch, id, body) in &acked {
        by_channel.entry(*ch).or_default().push((*id, body.clone()));
    }
    let mut total = 0;
    for (&ch, acks) in &by_channel {
        let got = stored(addr, ch);
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            (1..=ids.len() as u64).collect::<Vec<_>>(),
            "channel {ch:#x}: ids contiguous from 1"
        );
        let mut bodies: Vec<&String> = got.iter().map(|(_, b)| b).collect();
        bodies.sort();
        let n = bodies.len();
        bodies.dedup();
        assert_eq!(bodies.len(), n, "channel {ch:#x}: no body under two ids");
        let by_id: BTreeMap<u64, &String> = got.iter().map(|(id, b)| (*id, b)).collect();
        for (id, body) in acks {
            assert_eq!(
                by_id.get(id).copied(),
                Some(body),
                "channel {ch:#x}: acked id {id} holds its body"
            );
        }
        total += got.len();
    }
    println!(
        "crash loop: kills={kills} acked={} stored={total} channels={} retried={} restart ms={restart_ms:?}",
        acked.len(),
        by_channel.len(),
        retries.load(Ordering::Relaxed)
    );
    assert!(acked.len() >= 20, "something was sent");
}
