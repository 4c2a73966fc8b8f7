//! A logic server that is alive but does not answer (issue 12): a fake one
//! that completes the link handshake and then goes quiet, and a real one
//! stopped with SIGSTOP. Clients get UNAVAILABLE within the request
//! deadline, their sessions stay up and HEARTBEATs are answered. Also the
//! gateway's readiness (no client accepted before the link is up, within
//! the grace) and its reconnect pacing against a peer that drops the link
//! right after `Hello`.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb::{self, NetworkType, Status};
use proto::{Kind, codec};
use support::{Client, Gateway, Logic};

/// The gateway's defaults (README): a request is answered within 5 s; the
/// link is declared down after 3 pings 1 s apart go unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(5_000);
const LINK_DEAD_AFTER: Duration = Duration::from_millis(3 * 1_000);
/// Scheduling slack on a shared 2-core machine: the timer wheel's tick
/// and a loaded CI box.
const SLACK: Duration = Duration::from_millis(1_500);
const INBOX: u64 = 1 << 63;

/// A fake logic server on one accepted link: a thread reads it, answers
/// `Ping`s while `pongs` is set, and hands every other frame to `rx`.
struct FakeLink {
    rx: mpsc::Receiver<LinkMsg>,
    stream: TcpStream,
    pongs: Arc<AtomicBool>,
}

impl FakeLink {
    /// Waits (bounded) for the gateway to connect to `listener`.
    fn accept(listener: &TcpListener) -> FakeLink {
        listener.set_nonblocking(false).unwrap();
        let (tx, rx) = mpsc::channel();
        let l = listener.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = tx.send(l.accept().map(|(s, _)| s));
        });
        let stream = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the gateway never connected")
            .unwrap();
        let pongs = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel();
        let mut reader = stream.try_clone().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let answer = pongs.clone();
        std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Ok(Some(m)) = link::decode(&mut buf, 1 << 20) {
                    if let LinkMsg::Ping { nonce } = m {
                        if answer.load(Ordering::Acquire) {
                            let mut out = BytesMut::new();
                            link::encode_pong(&mut out, nonce);
                            let _ = writer.write_all(&out);
                        }
                    } else if tx.send(m).is_err() {
                        return;
                    }
                }
                match reader.read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
        });
        FakeLink { rx, stream, pongs }
    }

    fn next(&self) -> LinkMsg {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a link frame")
    }

    /// The next announcement (`Open` or `Reopen`) of `uin`'s session.
    fn announced(&self, uin: u64) -> SessionRef {
        loop {
            match self.next() {
                LinkMsg::Open {
                    session, uin: u, ..
                }
                | LinkMsg::Reopen {
                    session, uin: u, ..
                } if u == uin => {
                    return session;
                }
                _ => {}
            }
        }
    }

    /// The next client frame forwarded: (session, kind, seq, frame).
    fn next_client(&self) -> (SessionRef, Kind, u32, Bytes) {
        loop {
            if let LinkMsg::Client { session, frame, .. } = self.next() {
                let h = codec::peek_header(&frame, usize::MAX).unwrap().unwrap();
                return (session, h.kind, h.seq, frame);
            }
        }
    }

    /// Answers `seq` on the link (a whole client frame, one target).
    fn deliver(&mut self, to: SessionRef, kind: Kind, seq: u32, msg: &impl prost::Message) {
        let mut frame = BytesMut::new();
        proto::encode(&mut frame, kind, seq, msg);
        let mut out = BytesMut::new();
        link::encode_deliver(&mut out, &[to], &frame);
        self.stream.write_all(&out).unwrap();
    }
}

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
fn linked_client(gw: &Gateway, logic: &FakeLink, uin: u64) -> (Client, SessionRef) {
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
    let logic = FakeLink::accept(&l);
    assert!(matches!(logic.next(), LinkMsg::Hello { .. }));
    let (mut alice, session) = linked_client(&gw, &logic, 7);

    let start = Instant::now();
    alice.send(Kind::Send, 3, &send_req(1));
    alice.send(Kind::Join, 4, &pb::Join { channel: 9 });
    alice.send(Kind::Sync, 5, &pb::SyncReq::default());
    let got: Vec<_> = (0..3).map(|_| logic.next_client()).collect();
    assert!(got.iter().all(|g| g.0 == session));
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
    let (_, kind, _, _) = logic.next_client();
    assert_eq!(kind, Kind::Send);
}

#[test]
fn a_link_that_goes_silent_is_declared_down_after_missed_pongs() {
    let (l, addr) = listener();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let logic = FakeLink::accept(&l);
    assert!(matches!(logic.next(), LinkMsg::Hello { .. }));
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
    let again = FakeLink::accept(&l);
    assert!(matches!(again.next(), LinkMsg::Hello { .. }));
    again.announced(7);
    heartbeat(&mut alice, 5);
}

#[test]
fn two_requests_with_the_same_seq_are_both_answered_when_the_link_dies() {
    let (l, addr) = listener();
    let gw = Gateway::start(&["--threads", "1", "--logic", &addr]);
    let logic = FakeLink::accept(&l);
    assert!(matches!(logic.next(), LinkMsg::Hello { .. }));
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
    let mut logic = FakeLink::accept(&l);
    assert!(matches!(logic.next(), LinkMsg::Hello { .. }));
    let (mut alice, session) = linked_client(&gw, &logic, 7);
    alice.send(Kind::Send, 3, &send_req(1));
    alice.send(Kind::Send, 3, &send_req(2));
    let (_, _, seq1, _) = logic.next_client();
    let (_, _, seq2, _) = logic.next_client();
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
