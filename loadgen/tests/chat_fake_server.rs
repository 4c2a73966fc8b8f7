//! `loadgen chat` against a small fake server that speaks just enough of
//! PROTOCOL.md (LOGIN, HEARTBEAT, SEND, JOIN, PUSH) and misbehaves on
//! purpose: it drops the PUSH of every 7th message of a channel and sends
//! the PUSH of every 5th twice. The report must count exactly those as
//! lost and duplicated, whatever worker the sender and receiver are on.
//! In window mode it can also withhold every SEND_ACK, so that a sender
//! that kept sending past its window would show.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use loadgen::report::Report;
use prost::Message;
use proto::{Kind, pb};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

#[derive(Default)]
struct Fake {
    /// Logged-in sessions by uin, for pushes.
    conns: Mutex<HashMap<u64, Arc<Mutex<TcpStream>>>>,
    /// Last msg_id per channel.
    ids: Mutex<HashMap<u64, u64>>,
    /// Room members (uins).
    rooms: Mutex<HashMap<u64, Vec<u64>>>,
    dropped: AtomicU64,
    doubled: AtomicU64,
    /// Never answer a SEND.
    hold_acks: bool,
    /// SENDs received by sender uin.
    sends_by: Mutex<HashMap<u64, u64>>,
}

fn frame<M: Message>(kind: Kind, seq: u32, msg: &M) -> BytesMut {
    let mut b = BytesMut::new();
    proto::encode(&mut b, kind, seq, msg);
    b
}

impl Fake {
    fn serve(self: Arc<Self>, stream: TcpStream) {
        let me = Arc::new(Mutex::new(stream.try_clone().unwrap()));
        let mut rd = stream;
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let mut uin = 0;
        loop {
            while let Ok(Some(f)) = proto::decode(&mut buf, 1 << 16) {
                let reply = match f.kind {
                    Kind::Login => {
                        uin = pb::Login::decode(f.body).unwrap().uin;
                        self.conns.lock().unwrap().insert(uin, me.clone());
                        let ack = pb::LoginAck {
                            heartbeat_ms: 10_000,
                            idle_timeout_ms: 30_000,
                            server_time_ms: 0,
                            session_id: uin,
                        };
                        frame(Kind::LoginAck, f.seq, &ack)
                    }
                    Kind::Heartbeat => {
                        frame(Kind::HeartbeatAck, f.seq, &pb::HeartbeatAck::default())
                    }
                    Kind::Join => {
                        let channel = pb::Join::decode(f.body).unwrap().channel;
                        self.rooms
                            .lock()
                            .unwrap()
                            .entry(channel)
                            .or_default()
                            .push(uin);
                        let ack = pb::JoinAck {
                            status: 0,
                            channel,
                            newest_msg_id: 0,
                        };
                        frame(Kind::JoinAck, f.seq, &ack)
                    }
                    Kind::Send => self.send(uin, f.seq, pb::SendReq::decode(f.body).unwrap()),
                    other => panic!("fake server got {other:?}"),
                };
                if me.lock().unwrap().write_all(&reply).is_err() {
                    return;
                }
            }
            match rd.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn send(&self, from: u64, seq: u32, req: pb::SendReq) -> BytesMut {
        *self.sends_by.lock().unwrap().entry(from).or_default() += 1;
        let id = {
            let mut ids = self.ids.lock().unwrap();
            let id = ids.entry(req.channel).or_default();
            *id += 1;
            *id
        };
        let to: Vec<u64> = if req.channel >> 63 == 1 {
            vec![req.channel & !proto::INBOX_BIT]
        } else {
            self.rooms
                .lock()
                .unwrap()
                .get(&req.channel)
                .cloned()
                .unwrap_or_default()
        };
        let push = frame(
            Kind::Push,
            0,
            &pb::Push {
                channel: req.channel,
                msg_id: id,
                from_uin: from,
                from_device: 1,
                sent_at_ms: 0,
                body: req.body,
            },
        );
        for uin in to {
            let times = if id % 7 == 0 {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                0
            } else if id % 5 == 0 {
                self.doubled.fetch_add(1, Ordering::Relaxed);
                2
            } else {
                1
            };
            let conn = self.conns.lock().unwrap().get(&uin).cloned();
            if let Some(c) = conn {
                for _ in 0..times {
                    let _ = c.lock().unwrap().write_all(&push);
                }
            }
        }
        if self.hold_acks {
            return BytesMut::new();
        }
        let ack = pb::SendAck {
            status: 0,
            channel: req.channel,
            msg_id: id,
            client_msg_id: req.client_msg_id,
        };
        frame(Kind::SendAck, seq, &ack)
    }
}

/// 21 sessions over 3 worker processes.
fn run_chat(extra: &[&str]) -> (Report, Arc<Fake>) {
    let args: Vec<&str> = ["--sessions", "21", "--workers", "3"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    run_chat_with(Fake::default(), &args)
}

fn run_chat_with(fake: Fake, extra: &[&str]) -> (Report, Arc<Fake>) {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let fake = Arc::new(fake);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let f = fake.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let f = f.clone();
            std::thread::spawn(move || f.serve(s));
        }
    });
    let dir = std::env::temp_dir().join(format!(
        "loadgen-chat-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "x").unwrap();
    let json: PathBuf = dir.join("r.json");
    let out = Command::new(LOADGEN)
        .args(["chat", "--addr", &addr.to_string()])
        .args([
            "--hold-s",
            "0",
            "--chat-s",
            "1",
            "--chat-rate",
            "300",
            "--payload",
            "40",
            "--quiet",
        ])
        .args(extra)
        .arg("--secret-file")
        .arg(&secret)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (r, fake)
}

#[test]
fn pairs_count_exactly_the_pushes_the_server_dropped_and_doubled() {
    let (r, fake) = run_chat(&[]);
    let c = r.chat.clone().expect("chat section");
    assert_eq!(r.logged_in, 21);
    assert!(c.sent > 100, "{}", r.table());
    assert_eq!(c.acked, c.sent, "{}", r.table());
    assert_eq!(c.expected, c.acked, "one receiver per direct message");
    assert_eq!(
        c.lost,
        fake.dropped.load(Ordering::Relaxed),
        "{}",
        r.table()
    );
    assert_eq!(
        c.duplicates,
        fake.doubled.load(Ordering::Relaxed),
        "{}",
        r.table()
    );
    assert!(c.lost > 0 && c.duplicates > 0);
    assert_eq!(c.received, c.acked - c.lost + c.duplicates);
    // The dropped ones leave gaps that never fill: nothing arrives late.
    assert_eq!(c.out_of_order, 0);
    assert_eq!(c.e2e_us.count, c.received);
}

#[test]
fn rooms_expect_every_member_to_get_every_message() {
    let (r, fake) = run_chat(&["--rooms", "4"]);
    let c = r.chat.clone().expect("chat section");
    assert!(c.sent > 100, "{}", r.table());
    assert_eq!(c.acked, c.sent);
    // 21 sessions in 4 rooms: 6, 5, 5, 5 members; each push goes to all.
    assert!(c.expected > c.acked * 4, "{}", r.table());
    assert_eq!(
        c.lost,
        fake.dropped.load(Ordering::Relaxed),
        "{}",
        r.table()
    );
    assert_eq!(
        c.duplicates,
        fake.doubled.load(Ordering::Relaxed),
        "{}",
        r.table()
    );
}

/// `--window 8 --senders 1`: session 0 alone sends, and never has more
/// than 8 SENDs unacknowledged.
const WINDOW: [&str; 6] = ["--window", "8", "--senders", "1", "--sessions", "2"];

#[test]
fn a_window_stops_a_sender_whose_acks_never_come() {
    let fake = Fake {
        hold_acks: true,
        ..Fake::default()
    };
    let (r, fake) = run_chat_with(fake, &WINDOW);
    let c = r.chat.clone().expect("chat section");
    let sends = fake.sends_by.lock().unwrap().clone();
    // uin_base is the lowest uin; session 0 has it.
    let first = *sends.keys().min().expect("someone sent");
    assert_eq!(sends, HashMap::from([(first, 8)]), "{}", r.table());
    assert_eq!((c.sent, c.acked, c.window), (8, 0, 8));
    // The drain waited for answers (up to its limit) and says none came.
    assert_eq!(c.unanswered, 8);
}

#[test]
fn a_window_refills_as_acks_arrive_faster_than_the_paced_rate() {
    let (r, fake) = run_chat_with(Fake::default(), &WINDOW);
    let c = r.chat.clone().expect("chat section");
    let sends = fake.sends_by.lock().unwrap().clone();
    assert_eq!(sends.len(), 1, "one sender: {sends:?}");
    // Paced, 1 s at --chat-rate 300 would be 300 SENDs.
    assert!(c.sent > 1_000, "{}", r.table());
    assert_eq!(c.acked, c.sent, "{}", r.table());
    assert_eq!(c.unanswered, 0);
    assert_eq!(c.lost, fake.dropped.load(Ordering::Relaxed));
    assert!(c.acked_per_s > 1_000.0 && c.delivered_per_s > 0.0);
}
