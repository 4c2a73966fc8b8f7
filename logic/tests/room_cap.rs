//! The per-user room cap (issue 12): a JOIN past `max_rooms_per_user`
//! (default 1,000) is answered TOO_LARGE and changes nothing, so a
//! SYNC_ACK listing every room and the inbox stays within the client
//! protocol's maximum body (65,536).

mod common;

use common::{Logic, Sess};
use proto::codec::Kind;
use proto::pb::{self, Status};

#[test]
fn a_join_past_the_cap_is_too_large_and_sync_ack_fits_the_max_body() {
    let logic = Logic::start(&[]);
    let mut g = logic.gateway(0xCA9);
    let s = Sess::new(1, 1, 4242, 1);
    g.open(s);
    // The largest room ids, so that every head costs the most bytes.
    let room = |i: u64| proto::INBOX_BIT - 1 - i;
    let mut statuses = Vec::new();
    for i in 0..1_001u64 {
        g.join(s, room(i), 1 + i as u32);
        let got = g.collect(1);
        assert_eq!(got[0].kind, Kind::JoinAck);
        let ack: pb::JoinAck = prost::Message::decode(got[0].body.clone()).expect("join ack");
        assert_eq!(ack.channel, room(i));
        statuses.push(ack.status);
    }
    assert!(
        statuses[..1_000].iter().all(|&st| st == Status::Ok as i32),
        "the first 1,000 JOINs are accepted"
    );
    assert_eq!(
        statuses[1_000],
        Status::TooLarge as i32,
        "the 1,001st is not"
    );
    // Re-joining a room already joined is still OK at the cap.
    g.join(s, room(5), 5_000);
    let ack: pb::JoinAck = prost::Message::decode(g.collect(1)[0].body.clone()).expect("ack");
    assert_eq!(ack.status, Status::Ok as i32);

    g.sync(s, 6_000, &[]);
    let got = g.collect(1);
    assert_eq!((got[0].kind, got[0].seq), (Kind::SyncAck, 6_000));
    let ack: pb::SyncAck = prost::Message::decode(got[0].body.clone()).expect("sync ack");
    assert_eq!(ack.heads.len(), 1_001, "1,000 rooms and the inbox");
    assert!(
        !ack.heads.iter().any(|h| h.channel == room(1_000)),
        "the refused room is not joined"
    );
    assert!(
        got[0].body.len() <= proto::codec::DEFAULT_MAX_BODY,
        "SYNC_ACK body {} bytes",
        got[0].body.len()
    );
    // The worst case, every msg_id at its largest varint, still fits.
    let worst = pb::SyncAck {
        heads: ack
            .heads
            .iter()
            .map(|h| pb::ChannelHead {
                channel: h.channel,
                msg_id: u64::MAX,
            })
            .collect(),
    };
    let len = prost::Message::encoded_len(&worst);
    assert!(len <= proto::codec::DEFAULT_MAX_BODY, "worst case {len}");
}
