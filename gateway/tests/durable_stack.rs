//! Issue 11 through the whole stack: a real gateway and a logic server on
//! a data directory, clients speaking PROTOCOL.md. The logic server is
//! killed with SIGKILL and started again on the same directory and
//! address; the clients stay connected (the gateway re-announces their
//! sessions), and every acknowledged message, head, dedup record and
//! membership is still there.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::Kind;
use proto::pb::{self, NetworkType, Status};
use support::{Client, Gateway, TempDir, logic_bin};

const INBOX: u64 = proto::INBOX_BIT;

/// A logic server on `dir`, listening on `listen`.
fn start_logic(dir: &std::path::Path, listen: &str) -> (Child, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut child = Command::new(logic_bin())
            .args(["--listen", listen, "--threads", "2", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start logic");
        let out = child.stdout.take().expect("stdout");
        if let Some(Ok(line)) = BufReader::new(out).lines().next()
            && let Some(addr) = line.strip_prefix("listening ")
        {
            return (child, addr.trim().parse().expect("address"));
        }
        // Restarting on the same address right after a kill: retry.
        let _ = child.wait();
        assert!(Instant::now() < deadline, "logic did not start on {listen}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
    child.wait().expect("reaped");
}

fn send(c: &mut Client, seq: u32, channel: u64, cmid: u64, body: &str) -> pb::SendAck {
    let req = pb::SendReq {
        channel,
        client_msg_id: cmid,
        body: Bytes::copy_from_slice(body.as_bytes()),
    };
    c.send(Kind::Send, seq, &req);
    loop {
        let f = c.recv().expect("SEND_ACK");
        if f.kind == Kind::SendAck && f.seq == seq {
            return prost::Message::decode(f.body).expect("ack");
        }
    }
}

/// SYNC until answered (UNAVAILABLE while the logic server is down or the
/// session not yet re-announced); the PUSHes for `channel` and the heads.
fn sync(
    c: &mut Client,
    seq: u32,
    heads: &[(u64, u64)],
    channel: u64,
) -> (Vec<pb::Push>, Vec<(u64, u64)>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let req = pb::SyncReq {
        heads: heads
            .iter()
            .map(|&(channel, msg_id)| pb::ChannelHead { channel, msg_id })
            .collect(),
    };
    c.send(Kind::Sync, seq, &req);
    let mut pushes = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "SYNC answered after the restart");
        let f = c.recv().expect("a frame");
        match f.kind {
            Kind::Push => {
                let p: pb::Push = prost::Message::decode(f.body).expect("push");
                if p.channel == channel {
                    pushes.push(p);
                }
            }
            Kind::Error if f.seq == seq => {
                // Logic not back yet: ask again shortly.
                std::thread::sleep(Duration::from_millis(50));
                pushes.clear();
                c.send(Kind::Sync, seq, &req);
            }
            Kind::SyncAck if f.seq == seq => {
                let ack: pb::SyncAck = prost::Message::decode(f.body).expect("ack");
                let heads = ack.heads.iter().map(|h| (h.channel, h.msg_id)).collect();
                return (pushes, heads);
            }
            _ => {}
        }
    }
}

#[test]
fn a_killed_logic_server_comes_back_with_everything_and_no_client_reconnects() {
    let dir = TempDir::new("durable-stack");
    let (mut logic, addr) = start_logic(&dir.0, "127.0.0.1:0");
    let gw = Gateway::start(&[
        "--threads",
        "2",
        "--logic",
        &addr.to_string(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("millgate_uplink_connected") != 1 {
        assert!(Instant::now() < deadline, "uplink never connected");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
    let room = 900;
    let mut alice = Client::connect(gw.addr);
    alice.login(31, 1, NetworkType::Wifi);
    let mut bob = Client::connect(gw.addr);
    bob.login(32, 1, NetworkType::Wifi);
    for c in [&mut alice, &mut bob] {
        c.send(Kind::Join, 2, &pb::Join { channel: room });
        let ack: pb::JoinAck = c.expect(Kind::JoinAck, 2);
        assert_eq!(ack.status, Status::Ok as i32);
    }
    for i in 1..=10u64 {
        let ack = send(&mut alice, 100 + i as u32, room, i, &format!("r{i}"));
        assert_eq!((ack.status, ack.msg_id), (Status::Ok as i32, i));
    }
    let ack = send(&mut alice, 200, INBOX | 32, 11, "dm");
    assert_eq!((ack.status, ack.msg_id), (Status::Ok as i32, 1));

    kill9(&mut logic);
    let (mut logic, _) = start_logic(&dir.0, &addr.to_string());

    // Bob, still on his first connection, catches up from zero.
    let (pushes, heads) = sync(&mut bob, 300, &[(room, 0), (INBOX | 32, 0)], room);
    let ids: Vec<u64> = pushes.iter().map(|p| p.msg_id).collect();
    assert_eq!(
        ids,
        (1..=10).collect::<Vec<_>>(),
        "every acked room message"
    );
    assert_eq!(pushes[9].body, Bytes::from_static(b"r10"));
    let mut heads = heads;
    heads.sort_unstable();
    assert_eq!(
        heads,
        vec![(room, 10), (INBOX | 32, 1)],
        "membership and heads kept"
    );
    // Alice: a retry of her last SEND is a DUPLICATE with its id; the next
    // message gets newest + 1 and reaches bob live.
    let (_, _) = sync(&mut alice, 301, &[], room);
    let again = send(&mut alice, 302, INBOX | 32, 11, "dm");
    assert_eq!((again.status, again.msg_id), (Status::Duplicate as i32, 1));
    let next = send(&mut alice, 303, room, 12, "after");
    assert_eq!((next.status, next.msg_id), (Status::Ok as i32, 11));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "bob got message 11 live");
        let f = bob.recv().expect("push");
        if f.kind == Kind::Push {
            let p: pb::Push = prost::Message::decode(f.body).expect("push");
            if p.channel == room && p.msg_id == 11 {
                break;
            }
        }
    }
    kill9(&mut logic);
}
