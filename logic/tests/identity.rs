//! Gateway identity on the link: a second link connection of the same
//! gateway process (same id, same instance) is accepted; a link claiming a
//! gateway id that another instance holds is refused, counted, and leaves
//! the holder's sessions alone.

mod common;

use bytes::BytesMut;
use common::{Gateway, Logic, Sess};
use proto::link::{self, LinkMsg};

fn hello(g: &mut Gateway, id: u64, instance: u64) {
    let mut b = BytesMut::new();
    link::encode_hello(&mut b, id, instance);
    g.write(&b);
}

fn ping(g: &mut Gateway, nonce: u64) {
    let mut b = BytesMut::new();
    link::encode_ping(&mut b, nonce);
    g.write(&b);
    assert_eq!(g.recv(), LinkMsg::Pong { nonce });
}

#[test]
fn a_gateway_id_held_by_another_instance_is_refused() {
    let logic = Logic::start(&[]);
    let mut holder = Gateway::raw(logic.addr);
    hello(&mut holder, 7, 0xAAAA);
    let s = Sess::new(1, 1, 10, 1);
    holder.open(s);
    holder.send(s, common::inbox(10), 1, b"mine");
    assert_eq!(holder.collect(2).len(), 2, "an ack and the push");

    // The same process opening a second link: accepted.
    let mut second = Gateway::raw(logic.addr);
    hello(&mut second, 7, 0xAAAA);
    ping(&mut second, 1);
    logic.metric_eventually("logic_link_connections", 2);

    // Another process with the same id: refused, loudly.
    let mut impostor = Gateway::raw(logic.addr);
    hello(&mut impostor, 7, 0xBBBB);
    impostor.expect_closed();
    logic.metric_eventually("logic_gateway_id_conflicts_total", 1);
    logic.metric_eventually("logic_link_connections", 2);
    assert_eq!(logic.metric("logic_gateways"), 1);

    // The holder's session is still routed: its inbox still reaches it.
    holder.send(s, common::inbox(10), 2, b"still mine");
    assert_eq!(holder.collect(2).len(), 2);
}

#[test]
fn a_hello_of_another_link_version_is_refused() {
    let logic = Logic::start(&[]);
    let mut old = Gateway::raw(logic.addr);
    // A version 1 Hello: id and version, no instance.
    let mut b = BytesMut::new();
    b.extend_from_slice(&[0, 0, 0, 11, 0x01]);
    b.extend_from_slice(&7u64.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    old.write(&b);
    old.expect_closed();
    logic.metric_eventually("logic_link_connections", 0);
}
