//! Issue 12, the gateway's worker side, between real processes on
//! loopback: a hung logic server and a client flooding JOINs starve no
//! other session; rate limits survive a reconnect; frames over the max
//! body never reach a client; a slow consumer sees its KICK; the
//! open-file limit refuses quickly and recovers by itself.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use proto::Kind;
use proto::pb::{self, NetworkType, Status, error::ErrorCode};
use support::fake_logic::FakeLogic;
use support::{Client, Gateway, Logic};

const INBOX: u64 = proto::INBOX_BIT;

/// Waits until the gateway's uplink reports the link up.
fn wait_linked(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("millgate_uplink_connected") != 1 {
        assert!(Instant::now() < deadline, "uplink never connected");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
}

/// A JOIN through the logic tier: once answered OK, `c`'s Open has been
/// routed. Retries while the worker has not heard LinkUp yet.
fn routed(c: &mut Client, seq: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send(Kind::Join, seq, &pb::Join { channel: 5 });
        let ack: pb::JoinAck = c.expect(Kind::JoinAck, seq);
        if ack.status == Status::Ok as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "JOIN still refused: {ack:?}");
        std::thread::sleep(Duration::from_millis(10)); // polling: LinkUp reaches the worker unseen by the client
    }
}

fn join_frames(from: u32, n: u32) -> BytesMut {
    let mut out = BytesMut::new();
    for seq in from..from + n {
        let join = pb::Join {
            channel: u64::from(seq % 900 + 10),
        };
        proto::encode(&mut out, Kind::Join, seq, &join);
    }
    out
}

#[test]
fn a_hung_logic_server_and_a_join_flood_starve_no_other_session() {
    let logic = Logic::start("127.0.0.1:0");
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--logic",
        &logic.addr.to_string(),
        "--metrics",
        "127.0.0.1:0",
        "--uplink-queue",
        "64",
        "--idle-timeout-ms",
        "3000",
        "--join-rate",
        "1000000",
        "--join-burst",
        "1000000",
    ]);
    wait_linked(&gw);
    let mut bob = Client::connect(gw.addr);
    bob.login(2, 1, NetworkType::Wifi);
    routed(&mut bob, 2);

    // The logic server hangs: alive, connected, reading nothing.
    let pid = nix::unistd::Pid::from_raw(logic.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();

    // Alice pipelines JOINs until one comes back UNAVAILABLE: the link's
    // buffers, the uplink's and the 64-item queue are then full.
    let mut alice = Client::connect(gw.addr);
    alice.login(1, 1, NetworkType::Wifi);
    let mut writer = alice.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_w = stop.clone();
    std::thread::spawn(move || {
        let mut seq = 1;
        while !stop_w.load(Ordering::Relaxed) && seq < 4_000_000 {
            if writer.write_all(&join_frames(seq, 4096)).is_err() {
                return; // kicked as a slow consumer, or the test ended
            }
            seq += 4096;
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(f) = alice.recv() {
            if f.kind == Kind::JoinAck {
                let ack: pb::JoinAck = prost::Message::decode(f.body).unwrap();
                if ack.status == Status::Unavailable as i32 {
                    let _ = tx.send(f.seq);
                    return;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("no JOIN answered UNAVAILABLE: a full uplink queue left them hanging");
    stop.store(true, Ordering::Relaxed);

    // LOGIN still works, HEARTBEATs are answered for longer than an idle
    // timeout, and idle expiry still closes a silent session.
    let mut carol = Client::connect(gw.addr);
    carol.login(3, 1, NetworkType::Wifi);
    for seq in 10..19 {
        bob.send(Kind::Heartbeat, seq, &pb::Heartbeat {});
        let _: pb::HeartbeatAck = bob.expect(Kind::HeartbeatAck, seq);
        std::thread::sleep(Duration::from_millis(500)); // pacing the heartbeats: 4.5 s > the 3 s idle timeout
    }
    carol.expect_closed();
    assert_eq!(gw.metric("millgate_expiries_total"), 1, "only carol");
    assert!(gw.metric("millgate_uplink_full_unavailable_total") > 0);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
}

fn send_status(c: &mut Client, seq: u32, client_msg_id: u64) -> i32 {
    let req = pb::SendReq {
        channel: INBOX | 8,
        client_msg_id,
        body: Bytes::from_static(b"spam"),
    };
    c.send(Kind::Send, seq, &req);
    let ack: pb::SendAck = c.expect(Kind::SendAck, seq);
    ack.status
}

#[test]
fn a_reconnect_does_not_refill_the_send_bucket() {
    // No logic server: a SEND the limiter lets through is answered
    // UNAVAILABLE, one it holds back RATE_LIMITED. One token per second.
    let gw = Gateway::start(&["--threads", "1", "--send-rate", "1", "--send-burst", "3"]);
    let mut spammer = Client::connect(gw.addr);
    spammer.login(9, 1, NetworkType::Wifi);
    for i in 1..=3 {
        assert_eq!(
            send_status(&mut spammer, i, i.into()),
            Status::Unavailable as i32
        );
    }
    assert_eq!(send_status(&mut spammer, 4, 4), Status::RateLimited as i32);
    // Close, and wait for the gateway's close in turn.
    spammer.stream.shutdown(std::net::Shutdown::Write).unwrap();
    spammer.expect_closed();

    let mut again = Client::connect(gw.addr);
    again.login(9, 1, NetworkType::Wifi);
    assert_eq!(
        send_status(&mut again, 2, 5),
        Status::RateLimited as i32,
        "the new login got a fresh burst"
    );
    // Another device of the same user has a bucket of its own.
    let mut other = Client::connect(gw.addr);
    other.login(9, 2, NetworkType::Wifi);
    assert_eq!(send_status(&mut other, 2, 1), Status::Unavailable as i32);
}

/// The worker a session landed on: the gateway puts its index in bits
/// 32..48 of the LOGIN_ACK's session id.
fn worker_of(ack: &pb::LoginAck) -> u64 {
    (ack.session_id >> 32) & 0xffff
}

#[test]
fn a_reconnect_onto_another_worker_does_not_refill_the_send_bucket() {
    // Two workers; the kernel picks one per connection (SO_REUSEPORT). A
    // burst of 20 at one token per second: a fresh bucket lets 20 through.
    let gw = Gateway::start(&["--threads", "2", "--send-rate", "1", "--send-burst", "20"]);
    let start = Instant::now();
    let mut spammer = Client::connect(gw.addr);
    let first = worker_of(&spammer.login(9, 1, NetworkType::Wifi));
    let mut id = 0u64;
    let mut spend = |c: &mut Client, n: u32| {
        (0..n)
            .filter(|&seq| {
                id += 1;
                send_status(c, seq + 2, id) == Status::Unavailable as i32
            })
            .count()
    };
    assert_eq!(spend(&mut spammer, 20), 20, "the first login starts full");
    // Reconnect until the kernel puts the device on the other worker.
    let mut again = None;
    for _ in 0..64 {
        spammer.stream.shutdown(std::net::Shutdown::Write).unwrap();
        spammer.expect_closed();
        spammer = Client::connect(gw.addr);
        if worker_of(&spammer.login(9, 1, NetworkType::Wifi)) != first {
            again = Some(spammer);
            break;
        }
    }
    let mut again = again.expect("64 reconnects all landed on one worker");
    let through = spend(&mut again, 10);
    // At one token per second, what refilled meanwhile, and no burst.
    let refilled = start.elapsed().as_secs() as usize + 1;
    assert!(
        through <= refilled,
        "{through} SENDs let through after a reconnect onto another worker ({refilled} refilled)"
    );
}

/// `msg` encoded, followed by an unknown field padding it to `pad` bytes.
fn padded(msg: &impl prost::Message, pad: usize) -> Vec<u8> {
    let mut body = msg.encode_to_vec();
    let mut extra = BytesMut::new();
    prost::encoding::bytes::encode(15, &vec![7u8; pad], &mut extra);
    body.put_slice(&extra);
    body
}

#[test]
fn frames_over_the_max_body_never_reach_the_client_and_replies_become_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--logic",
        &addr,
        "--max-body",
        "1024",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut logic = FakeLogic::accept(&listener);
    logic.hello();
    let mut alice = Client::connect(gw.addr);
    alice.login(7, 1, NetworkType::Wifi);

    // A SYNC_ACK too large for her: ERROR(UNAVAILABLE) instead.
    alice.send(Kind::Sync, 5, &pb::SyncReq::default());
    // The gateway forwards under its own link seq and puts the client's
    // back on the answer.
    let sync = logic.next_client();
    assert_eq!(sync.kind, Kind::Sync);
    let me = sync.session;
    let heads = (1..400)
        .map(|c| pb::ChannelHead {
            channel: c,
            msg_id: 1 << 40,
        })
        .collect();
    let big = prost::Message::encode_to_vec(&pb::SyncAck { heads });
    assert!(big.len() > 1024);
    logic.deliver_raw(me, Kind::SyncAck, sync.seq, &big);
    assert_eq!(alice.expect_error(5), ErrorCode::Unavailable);

    // A SEND_ACK too large: SEND_ACK(UNAVAILABLE) with her ids.
    let req = pb::SendReq {
        channel: INBOX | 8,
        client_msg_id: 77,
        body: Bytes::from_static(b"hi"),
    };
    alice.send(Kind::Send, 6, &req);
    let send = logic.next_client();
    assert_eq!((send.kind, send.client_msg_id()), (Kind::Send, 77));
    let ok = pb::SendAck {
        status: Status::Ok as i32,
        channel: INBOX | 8,
        msg_id: 1,
        client_msg_id: 77,
    };
    logic.deliver_raw(me, Kind::SendAck, send.seq, &padded(&ok, 2_000));
    let ack: pb::SendAck = alice.expect(Kind::SendAck, 6);
    assert_eq!(
        (ack.status, ack.channel, ack.msg_id, ack.client_msg_id),
        (Status::Unavailable as i32, INBOX | 8, 0, 77)
    );

    // A PUSH too large is dropped; the next one arrives, on the same link.
    let push = |id| pb::Push {
        channel: INBOX | 7,
        msg_id: id,
        ..Default::default()
    };
    logic.deliver_raw(me, Kind::Push, 0, &padded(&push(1), 5_000));
    logic.deliver_raw(me, Kind::Push, 0, &prost::Message::encode_to_vec(&push(2)));
    let got: pb::Push = alice.expect(Kind::Push, 0);
    assert_eq!(got.msg_id, 2);
    assert_eq!(gw.metric("millgate_oversize_dropped_total"), 3);
}

#[test]
fn a_slow_consumer_gets_its_kick_before_the_close() {
    let logic = Logic::start("127.0.0.1:0");
    let gw = Gateway::start(&[
        "--logic",
        &logic.addr.to_string(),
        "--metrics",
        "127.0.0.1:0",
        "--send-rate",
        "100000",
        "--send-burst",
        "100000",
    ]);
    wait_linked(&gw);
    // Bob's socket takes little: the gateway's buffers fill behind it.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8 * 1024).unwrap();
    sock.connect(&gw.addr.into()).unwrap();
    let mut bob = Client::from_stream(sock.into());
    bob.login(42, 1, NetworkType::Wifi);
    routed(&mut bob, 2);
    let mut alice = Client::connect(gw.addr);
    alice.login(41, 1, NetworkType::Wifi);

    // Bob stops reading while Alice sends him 16 KiB messages.
    let body = Bytes::from(vec![b'x'; 16 * 1024]);
    let slow = "millgate_closes_total{reason=\"slow_consumer\"}";
    let mut sent = 0u64;
    while gw.metric(slow) == 0 {
        sent += 1;
        assert!(sent <= 2_000, "never kicked after {sent} messages");
        let req = pb::SendReq {
            channel: INBOX | 42,
            client_msg_id: sent,
            body: body.clone(),
        };
        alice.send(Kind::Send, sent as u32, &req);
        let ack: pb::SendAck = alice.expect(Kind::SendAck, sent as u32);
        assert_eq!(ack.status, Status::Ok as i32);
    }

    // Bob reads again, slowly (a push per 50 ms: about 330 KB/s): what the
    // kernel holds (256 KiB for the default 128 KiB SO_SNDBUF), then the
    // KICK, then the end, all within the gateway's 2 s linger. Behind the
    // 1 MiB write budget the KICK would come too late.
    let mut last = 0;
    loop {
        let f = bob.recv().expect("the KICK before the end");
        match f.kind {
            Kind::Push => {
                let p: pb::Push = prost::Message::decode(f.body).unwrap();
                assert!(p.msg_id > last, "in order");
                last = p.msg_id;
                std::thread::sleep(Duration::from_millis(50)); // pacing: a slow reader
            }
            Kind::Kick => {
                let k: pb::Kick = prost::Message::decode(f.body).unwrap();
                assert_eq!(k.reason, pb::KickReason::SlowConsumer as i32);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    bob.expect_closed();
}

/// Open descriptors of process `pid` numbered below `limit` (one
/// inherited from the test harness may sit above it, taking no slot).
fn open_fds(pid: u32, limit: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&fd| fd < limit)
        .count()
}

/// A gateway whose open-file limit is `limit`, and as many logged-in
/// clients as it has descriptors left: it is at the limit.
fn full_gateway(limit: u32, extra: &[&str]) -> (Gateway, Vec<Client>) {
    let nofile = format!("--nofile={limit}:{limit}");
    let mut args = vec!["--threads", "1"];
    args.extend_from_slice(extra);
    let gw = Gateway::start_under(&["prlimit", &nofile, "--"], &args);
    let free = limit as usize - open_fds(gw.child.id(), limit);
    let clients = (0..free)
        .map(|i| {
            let mut c = Client::connect(gw.addr);
            c.login(100 + i as u64, 1, NetworkType::Wifi);
            c
        })
        .collect();
    (gw, clients)
}

#[test]
fn at_the_open_file_limit_a_client_is_refused_quickly() {
    let (gw, _held) = full_gateway(48, &[]);
    let start = Instant::now();
    let mut late = Client::connect(gw.addr);
    late.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    late.send(Kind::Login, 1, &support::login_msg(1, 1, NetworkType::Wifi));
    late.expect_closed();
    let waited = start.elapsed();
    // The default grace is 250 ms; hanging would be the 5 s timeout.
    assert!(waited < Duration::from_secs(2), "refused after {waited:?}");
}

#[test]
fn at_the_open_file_limit_queued_clients_are_accepted_once_descriptors_free() {
    let (gw, mut held) = full_gateway(48, &["--emfile-grace-ms", "600000"]);
    let mut queued: Vec<Client> = (0..2)
        .map(|i| {
            let mut c = Client::connect(gw.addr);
            c.stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            c.send(
                Kind::Login,
                1,
                &support::login_msg(50 + i, 1, NetworkType::Wifi),
            );
            c
        })
        .collect();
    // Two held clients leave; no one new arrives.
    held.truncate(held.len() - 2);
    for c in &mut queued {
        let _: pb::LoginAck = c.expect(Kind::LoginAck, 1);
    }
}
