//! A logic server that is alive but does not answer (issue 12): a fake one
//! that completes the link handshake and then goes quiet, and a real one
//! stopped with SIGSTOP. Clients get UNAVAILABLE within the request
//! deadline, their sessions stay up and HEARTBEATs are answered. Also the
//! gateway's readiness (no client accepted before the link is up, within
//! the grace) and its reconnect pacing against a peer that drops the link
//! right after `Hello`.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::Signal;
use proto::Kind;
use proto::link::SessionRef;
use proto::pb::{self, NetworkType, Status};
use support::fake_logic::FakeLogic;
use support::{Client, Gateway, Logic};

/// The gateway's defaults (README): a request is answered within 5 s; the
/// link is declared down after 3 pings 1 s apart go unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(5_000);
const LINK_DEAD_AFTER: Duration = Duration::from_millis(3 * 1_000);
/// Scheduling slack on a shared 2-core machine: the timer wheel's tick
/// and a loaded CI box.
const SLACK: Duration = Duration::from_millis(1_500);
const INBOX: u64 = proto::INBOX_BIT;

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn send_req(client_msg_id: u64) -> pb::SendReq {
    pb::SendReq {
        channel: INBOX | 8,
        client_msg_id,
        body: Bytes::from_static(b"into the void"),
    }
}

/// Logs `uin` in on a gateway linked to `logic` and returns the session
/// the fake saw announced.
fn linked_client(gw: &Gateway, logic: &FakeLogic, uin: u64) -> (Client, SessionRef) {
    let mut c = Client::connect(gw.addr);
    c.login(uin, 1, NetworkType::Wifi);
    let session = logic.announced(uin);
    (c, session)
}

/// The session layer still works: a HEARTBEAT is answered.
fn heartbeat(c: &mut Client, seq: u32) {
    c.send(Kind::Heartbeat, seq, &pb::Heartbeat {});
    let _: pb::HeartbeatAck = c.expect(Kind::HeartbeatAck, seq);
}

#[test]
fn a_request_the_logic_server_never_answers_gets_unavailable_at_the_deadline() {
    let (l, addr) = listener();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    // This fake answers every Ping (the link stays up) and no request.
    let logic = FakeLogic::accept(&l);
    logic.hello();
    let (mut alice, session) = linked_client(&gw, &logic, 7);

    let start = Instant::now();
    alice.send(Kind::Send, 3, &send_req(1));
    alice.send(Kind::Join, 4, &pb::Join { channel: 9 });
    alice.send(Kind::Sync, 5, &pb::SyncReq::default());
    let got: Vec<_> = (0..3).map(|_| logic.next_client()).collect();
    assert!(got.iter().all(|g| g.session == session));
    let ack: pb::SendAck = alice.expect(Kind::SendAck, 3);
    assert_eq!(ack.status, Status::Unavailable as i32);
    assert_eq!(ack.client_msg_id, 1);
    let ack: pb::JoinAck = alice.expect(Kind::JoinAck, 4);
    assert_eq!(ack.status, Status::Unavailable as i32);
    assert_eq!(alice.expect_error(5), pb::error::ErrorCode::Unavailable);
    let took = start.elapsed();
    assert!(
        took >= REQUEST_TIMEOUT - Duration::from_millis(200) && took < REQUEST_TIMEOUT + SLACK,
        "answered after {took:?}"
    );
    // The session is still there, and so is the link.
    heartbeat(&mut alice, 6);
    alice.send(Kind::Send, 7, &send_req(2));
    assert_eq!(logic.next_client().kind, Kind::Send);
}

#[test]
fn a_link_that_goes_silent_is_declared_down_after_missed_pongs() {
    let (l, addr) = listener();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let logic = FakeLogic::accept(&l);
    logic.hello();
    let (mut alice, _) = linked_client(&gw, &logic, 7);
    // From here the fake reads but never answers anything, Pings included.
    logic.pongs.store(false, Ordering::Release);
    let start = Instant::now();
    alice.send(Kind::Send, 3, &send_req(1));
    let ack: pb::SendAck = alice.expect(Kind::SendAck, 3);
    assert_eq!(ack.status, Status::Unavailable as i32);
    let took = start.elapsed();
    // Before the request deadline: the link was found dead, not the request.
    assert!(took < LINK_DEAD_AFTER + SLACK, "answered after {took:?}");
    heartbeat(&mut alice, 4);
    // The uplink reconnects, and re-announces alice on the new link.
    let again = FakeLogic::accept(&l);
    again.hello();
    again.announced(7);
    heartbeat(&mut alice, 5);
}

#[test]
fn two_requests_with_the_same_seq_are_both_answered_when_the_link_dies() {
    let (l, addr) = listener();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let logic = FakeLogic::accept(&l);
    logic.hello();
    let (mut alice, _) = linked_client(&gw, &logic, 7);
    // PROTOCOL.md lets a client pick its seqs; two in flight may share one.
    alice.send(Kind::Send, 3, &send_req(1));
    alice.send(Kind::Send, 3, &send_req(2));
    logic.next_client();
    logic.next_client();
    drop(logic);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let ack: pb::SendAck = alice.expect(Kind::SendAck, 3);
        assert_eq!(ack.status, Status::Unavailable as i32);
        ids.push(ack.client_msg_id);
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn answers_to_requests_sharing_a_seq_reach_the_client_with_that_seq() {
    let (l, addr) = listener();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let mut logic = FakeLogic::accept(&l);
    logic.hello();
    let (mut alice, session) = linked_client(&gw, &logic, 7);
    alice.send(Kind::Send, 3, &send_req(1));
    alice.send(Kind::Send, 3, &send_req(2));
    let seq1 = logic.next_client().seq;
    let seq2 = logic.next_client().seq;
    // The logic server answers the second first, echoing what it was sent.
    for (seq, id) in [(seq2, 2), (seq1, 1)] {
        let ack = pb::SendAck {
            status: Status::Ok as i32,
            channel: INBOX | 8,
            msg_id: id,
            client_msg_id: id,
        };
        logic.deliver(session, Kind::SendAck, seq, &ack);
    }
    for id in [2, 1] {
        let ack: pb::SendAck = alice.expect(Kind::SendAck, 3);
        assert_eq!((ack.status, ack.client_msg_id), (Status::Ok as i32, id));
    }
    // Nothing is left to bounce: the link dies and alice hears nothing more
    // than the answer to her next request.
    drop(logic);
    heartbeat(&mut alice, 4);
}

/// Waits until the gateway's uplink reports the link `up` (1) or not (0).
fn wait_linked(gw: &Gateway, up: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.metric("millgate_uplink_connected") != up {
        assert!(Instant::now() < deadline, "uplink never reached {up}");
        std::thread::sleep(Duration::from_millis(10)); // polling a scrape endpoint
    }
}

fn send(c: &mut Client, seq: u32, client_msg_id: u64) -> pb::SendAck {
    c.send(Kind::Send, seq, &send_req(client_msg_id));
    loop {
        let f = c.recv().expect("SEND_ACK");
        if f.kind == Kind::SendAck {
            assert_eq!(f.seq, seq);
            return prost::Message::decode(f.body).unwrap();
        }
    }
}

/// Resumes a stopped logic server whatever happens in the test, before the
/// `Logic` itself is dropped (and killed by PID).
struct Resume(nix::unistd::Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn a_stopped_logic_server_is_detected_and_the_link_comes_back_after_sigcont() {
    let logic = Logic::start("127.0.0.1:0");
    let addr = logic.addr.to_string();
    let gw = Gateway::start(&[
        "--threads",
        "2",
        "--logic",
        &addr,
        "--metrics",
        "127.0.0.1:0",
    ]);
    wait_linked(&gw, 1);
    let mut alice = Client::connect(gw.addr);
    alice.login(41, 1, NetworkType::Wifi);
    assert_eq!(send(&mut alice, 2, 1).status, Status::Ok as i32);

    let pid = nix::unistd::Pid::from_raw(logic.child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let resume = Resume(pid);
    let start = Instant::now();
    assert_eq!(send(&mut alice, 3, 2).status, Status::Unavailable as i32);
    let took = start.elapsed();
    assert!(took < REQUEST_TIMEOUT + SLACK, "answered after {took:?}");
    heartbeat(&mut alice, 4);
    wait_linked(&gw, 0);
    heartbeat(&mut alice, 5);

    drop(resume);
    wait_linked(&gw, 1);
    // Same session, no reconnect: the SEND goes through again.
    let ack = send(&mut alice, 6, 3);
    assert!(
        [Status::Ok as i32, Status::Duplicate as i32].contains(&ack.status),
        "{ack:?}"
    );
    heartbeat(&mut alice, 7);
}

/// Holds a loopback port: bound with SO_REUSEPORT, never listening, so
/// connections to it are refused until a logic server started with
/// `--reuse-port true` binds the same address.
fn hold_port() -> (socket2::Socket, String) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&any.into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap().to_string();
    (s, addr)
}

#[test]
fn a_client_that_comes_before_the_logic_server_is_served_once_it_is_up() {
    let (_hold, listen) = hold_port();
    let gw = Gateway::start(&[
        "--threads",
        "2",
        "--logic",
        &listen,
        "--link-grace-ms",
        "10000",
    ]);
    // The client connects (the listen backlog takes it) and says everything
    // before any logic server exists.
    let mut alice = Client::connect(gw.addr);
    alice.send(
        Kind::Login,
        1,
        &support::login_msg(41, 1, NetworkType::Wifi),
    );
    alice.send(Kind::Send, 2, &send_req(1));
    let _logic = Logic::start_with(&listen, &["--reuse-port", "true"]);
    let _: pb::LoginAck = alice.expect(Kind::LoginAck, 1);
    let ack: pb::SendAck = alice.expect(Kind::SendAck, 2);
    assert_eq!(ack.status, Status::Ok as i32, "{ack:?}");
}

#[test]
fn after_the_grace_a_gateway_without_its_link_serves_clients_by_rule_13() {
    let (_hold, listen) = hold_port();
    let gw = Gateway::start(&[
        "--threads",
        "1",
        "--logic",
        &listen,
        "--link-grace-ms",
        "300",
    ]);
    let start = Instant::now();
    let mut alice = Client::connect(gw.addr);
    alice.login(41, 1, NetworkType::Wifi);
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "accepted before the grace"
    );
    let ack = send(&mut alice, 2, 1);
    assert_eq!(ack.status, Status::Unavailable as i32);
    heartbeat(&mut alice, 3);
}

#[test]
fn a_peer_that_drops_the_link_after_hello_is_not_redialled_in_a_hot_loop() {
    let (l, addr) = listener();
    let _gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    // Like a logic server refusing the Hello (another version, a clashing
    // gateway id): read it, close.
    let window = Duration::from_secs(3);
    let start = Instant::now();
    l.set_nonblocking(true).unwrap();
    let mut links = 0;
    while start.elapsed() < window {
        match l.accept() {
            Ok((mut s, _)) => {
                links += 1;
                let mut b = [0u8; 64];
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let _ = s.read(&mut b);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)), // polling accept over a fixed window
        }
    }
    // Backoff from 50 ms doubling: 50+100+200+400+800+1600 > 3 s. Reset on
    // each connect, it would redial every 50 ms (about 60 links).
    assert!(links <= 8, "{links} links in {window:?}");
    assert!(links >= 2, "{links} links in {window:?}");
}
