//! Several logic nodes (`--logic A,B`, issue 14): the gateway links to one
//! at a time, skips a node that is down, and when its node dies moves to
//! the other and re-announces its sessions there, with no client
//! reconnecting.

mod support;

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use proto::Kind;
use proto::pb::{self, NetworkType, Status};
use support::fake_logic::FakeLogic;
use support::{Client, Gateway};

/// Two fake nodes; whichever the gateway dials comes out of the channel
/// as (index, link), in the order they are dialled.
fn nodes() -> ([String; 2], mpsc::Receiver<(usize, TcpStream)>) {
    let (tx, rx) = mpsc::channel();
    let addrs = [0, 1].map(|i| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok((s, _)) = l.accept() {
                if tx.send((i, s)).is_err() {
                    return;
                }
            }
        });
        addr
    });
    (addrs, rx)
}

fn dialled(rx: &mpsc::Receiver<(usize, TcpStream)>) -> (usize, FakeLogic) {
    let (i, s) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the gateway dialled no node");
    let logic = FakeLogic::on(s);
    logic.hello();
    (i, logic)
}

fn send_req(id: u64) -> pb::SendReq {
    pb::SendReq {
        channel: proto::inbox_of(8),
        client_msg_id: id,
        body: bytes::Bytes::from_static(b"hi"),
    }
}

/// Alice's SEND reaches `logic`, which answers it OK.
fn send_through(alice: &mut Client, logic: &mut FakeLogic, seq: u32, id: u64) {
    alice.send(Kind::Send, seq, &send_req(id));
    let fwd = logic.next_client();
    assert_eq!((fwd.kind, fwd.client_msg_id()), (Kind::Send, id));
    let ack = pb::SendAck {
        status: Status::Ok as i32,
        channel: proto::inbox_of(8),
        msg_id: id,
        client_msg_id: id,
    };
    logic.deliver(fwd.session, Kind::SendAck, fwd.seq, &ack);
    let got: pb::SendAck = alice.expect(Kind::SendAck, seq);
    assert_eq!((got.status, got.msg_id), (Status::Ok as i32, id));
}

#[test]
fn when_its_node_dies_the_gateway_moves_its_sessions_to_the_other() {
    let ([a, b], rx) = nodes();
    let gw = Gateway::start(&["--threads", "2", "--logic", &format!("{a},{b}")]);
    let (first, mut logic) = dialled(&rx);
    let mut alice = Client::connect(gw.addr);
    alice.login(7, 1, NetworkType::Wifi);
    logic.announced(7);
    send_through(&mut alice, &mut logic, 2, 1);

    // Its node dies: the gateway dials the other one at once, and alice's
    // session is announced there without her reconnecting.
    drop(logic);
    let (second, mut logic) = dialled(&rx);
    assert_ne!(first, second, "the next node, not the dead one again");
    logic.announced(7);
    send_through(&mut alice, &mut logic, 3, 2);
}

#[test]
fn a_node_that_is_down_is_skipped() {
    // One node refuses connections (nothing listens on a port still
    // bound), the other is up: the gateway links to the live one whatever
    // its starting node, and serves clients.
    let hold = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    hold.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let dead = hold.local_addr().unwrap().as_socket().unwrap().to_string();
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap().to_string();
    for order in [format!("{dead},{live_addr}"), format!("{live_addr},{dead}")] {
        let gw = Gateway::start(&["--threads", "1", "--logic", &order]);
        let mut logic = FakeLogic::accept(&live);
        logic.hello();
        let mut alice = Client::connect(gw.addr);
        alice.login(7, 1, NetworkType::Wifi);
        logic.announced(7);
        send_through(&mut alice, &mut logic, 2, 1);
    }
}
