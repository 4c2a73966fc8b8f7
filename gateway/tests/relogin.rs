//! Rule 3 across a logic outage, with real processes: a device logged in
//! on gateway A, the logic server went away, the same (uin, device) logged
//! in on gateway B, the logic server came back. Whichever gateway
//! re-announces first, the router keeps the newest login (B's) and kicks
//! A's. The re-announce order is forced by stopping one gateway (SIGSTOP)
//! while the other re-links.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::Signal;
use proto::Kind;
use proto::pb::{self, NetworkType, Status};
use support::{Client, Gateway, Logic};

const INBOX: u64 = proto::INBOX_BIT;

fn wait_uplink(gw: &Gateway, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.metric("millgate_uplink_connected") != want {
        assert!(Instant::now() < deadline, "uplink never became {want}");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
}

/// A SYNC round trip: once answered, everything this session's worker
/// queued before it (its Reopen after a reconnect) was handled by the
/// user's shard, which also answers the SYNC.
fn routed(c: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    c.send(Kind::Sync, 77, &pb::SyncReq::default());
    loop {
        assert!(Instant::now() < deadline, "never routed");
        let f = c.recv().expect("SYNC_ACK");
        match f.kind {
            Kind::SyncAck if f.seq == 77 => return,
            // The worker has not heard LinkUp yet: ask again.
            Kind::Error if f.seq == 77 => c.send(Kind::Sync, 77, &pb::SyncReq::default()),
            other => panic!("unexpected {other:?} while waiting for SYNC_ACK"),
        }
    }
}

fn gateway(logic: &str) -> Gateway {
    Gateway::start(&["--logic", logic, "--metrics", "127.0.0.1:0"])
}

/// Runs the scenario; `a_first` picks which gateway re-announces first.
fn newest_login_wins(a_first: bool) {
    let logic = Logic::start("127.0.0.1:0");
    // The restarted server must be found where the gateways look for it.
    let listen = logic.addr.to_string();
    let ga = gateway(&listen);
    let gb = gateway(&listen);
    wait_uplink(&ga, 1);
    wait_uplink(&gb, 1);

    let mut older = Client::connect(ga.addr);
    older.login(51, 1, NetworkType::Wifi);
    routed(&mut older);

    drop(logic);
    wait_uplink(&ga, 0);
    wait_uplink(&gb, 0);
    let mut newer = Client::connect(gb.addr);
    newer.login(51, 1, NetworkType::Wifi);

    let (first, second) = if a_first { (&ga, &gb) } else { (&gb, &ga) };
    second.signal(Signal::SIGSTOP);
    let _logic = Logic::start(&listen);
    wait_uplink(first, 1);
    // The first gateway's session is re-announced and routed.
    if a_first {
        routed(&mut older);
    } else {
        routed(&mut newer);
    }
    second.signal(Signal::SIGCONT);
    wait_uplink(second, 1);

    let kick: pb::Kick = older.expect(Kind::Kick, 0);
    assert_eq!(kick.reason, pb::KickReason::DuplicateLogin as i32);
    older.expect_closed();

    // The newer login is the one routed: a DM to its inbox reaches it.
    routed(&mut newer);
    let req = pb::SendReq {
        channel: INBOX | 51,
        client_msg_id: 1,
        body: Bytes::from_static(b"to me"),
    };
    newer.send(Kind::Send, 5, &req);
    let (mut acked, mut pushed) = (false, false);
    while !(acked && pushed) {
        let f = newer.recv().expect("ack and push, no kick");
        match f.kind {
            Kind::SendAck => {
                let ack: pb::SendAck = prost::Message::decode(f.body).unwrap();
                assert_eq!(ack.status, Status::Ok as i32);
                acked = true;
            }
            Kind::Push => pushed = true,
            other => panic!("the newer session got {other:?}"),
        }
    }
}

#[test]
fn the_older_login_reannounced_first_is_kicked() {
    newest_login_wins(true);
}

#[test]
fn the_older_login_reannounced_last_is_kicked() {
    newest_login_wins(false);
}
