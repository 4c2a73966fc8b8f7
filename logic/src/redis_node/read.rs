//! Reading retained messages back: the `RANGE` command and its answer, and
//! turning a stored element (a `Push` without its id) into the PUSH frame.

use bytes::Bytes;
use prost::Message;
use proto::codec::Kind;
use proto::pb;
use redis::Value;

use super::scripts::{Scripts, chan_keys, evalsha};
use crate::reply::client_frame;

/// What `RANGE` returned: the channel's head and the retained messages
/// after the asked id, as (id, `sent_at_ms`, PUSH frame), older than the
/// age limit dropped.
#[derive(Debug, Default)]
pub struct Range {
    pub head: u64,
    pub frames: Vec<(u64, u64, Bytes)>,
}

thread_local! {
    static SCRIPTS: Scripts = Scripts::new();
}

/// The `RANGE` call for channel `ch` after id `after` (`None`: head only).
pub fn range_cmd(ch: u64, after: Option<u64>) -> redis::Cmd {
    let [n, l, _, _] = chan_keys(ch);
    let after = after.map_or("-1".to_string(), |a| a.to_string());
    SCRIPTS.with(|s| evalsha(&s.range, &[&n, &l], &[after.as_bytes()]))
}

/// Decodes a `RANGE` answer; elements sent before `now - max_age_ms` are
/// skipped.
pub fn read_range(v: Value, max_age_ms: u64) -> Option<Range> {
    let Value::Array(items) = v else {
        return None;
    };
    let mut it = items.into_iter();
    let head = as_u64(it.next()?)?;
    let first = as_u64(it.next()?)?;
    let oldest = crate::worker::now_ms().saturating_sub(max_age_ms);
    let mut frames = Vec::new();
    for (i, e) in it.enumerate() {
        let Value::BulkString(b) = e else { return None };
        let id = first + i as u64;
        if let Some((at, f)) = push_frame_aged(&b, id, oldest) {
            frames.push((id, at, f));
        }
    }
    Some(Range { head, frames })
}

/// An integer reply as u64.
pub fn as_u64(v: Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(i).ok(),
        Value::BulkString(b) => std::str::from_utf8(&b).ok()?.parse().ok(),
        _ => None,
    }
}

/// The PUSH frame of stored element `push` with id `id`.
pub fn push_frame(push: &[u8], id: u64) -> Option<Bytes> {
    push_frame_aged(push, id, 0).map(|(_, f)| f)
}

fn push_frame_aged(push: &[u8], id: u64, oldest_ms: u64) -> Option<(u64, Bytes)> {
    let mut p = pb::Push::decode(push).ok()?;
    if p.sent_at_ms < oldest_ms {
        return None;
    }
    p.msg_id = id;
    Some((p.sent_at_ms, client_frame(Kind::Push, 0, &p)))
}
