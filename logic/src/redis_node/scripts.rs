//! The Redis key layout and the Lua scripts of a Redis-backed logic node
//! (the tables in `logic/REDIS.md`). Every script touches keys of one hash
//! tag only, so each runs in one slot of a Redis Cluster.

use proto::link::SessionRef;
use redis::Script;

/// The pub/sub channel every node subscribes to: stored messages
/// (`m<CH>:<ID>:<push>`) and displaced sessions (`k<UIN>|<DEV>|<record>`).
pub const BUS: &str = "mg:bus";

/// Keys of channel `ch` (`{c<CH>}` tag): counter, list, members, dedup.
pub fn chan_keys(ch: u64) -> [String; 4] {
    [
        format!("mg:{{c{ch}}}:n"),
        format!("mg:{{c{ch}}}:l"),
        format!("mg:{{c{ch}}}:m"),
        format!("mg:{{c{ch}}}:d"),
    ]
}

/// The counter key of channel `ch`.
pub fn counter(ch: u64) -> String {
    format!("mg:{{c{ch}}}:n")
}

/// The member set of room `ch`.
pub fn members(ch: u64) -> String {
    format!("mg:{{c{ch}}}:m")
}

/// The device-latest hash of `uin` (field: device).
pub fn user_dedup(uin: u64) -> String {
    format!("mg:{{u{uin}}}:d")
}

/// The rooms set of `uin`.
pub fn user_rooms(uin: u64) -> String {
    format!("mg:{{u{uin}}}:r")
}

/// The session hash of `uin` (field: device).
pub fn user_sessions(uin: u64) -> String {
    format!("mg:{{u{uin}}}:s")
}

/// A number zero-padded to 20 digits: the scripts compare these as
/// strings (a `client_msg_id` or a login time may exceed a Lua double).
pub fn pad20(x: u64) -> String {
    format!("{x:020}")
}

/// SEND. KEYS: n, l, m, d of the channel. ARGV: uin, `UIN:DEV`, CMID20,
/// push (without msg_id), max count, ttl ms, is_room (`1`/`0`), channel.
/// Returns `{0,id}` stored, `{1,id}` duplicate of a stored SEND, `{2,0}`
/// below a stored SEND of this device here, `{3,0}` not a member.
const SEND: &str = r#"
if ARGV[7] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then
  return {3, 0}
end
local rec = redis.call('HGET', KEYS[4], ARGV[2])
if rec then
  local c = string.sub(rec, 1, 20)
  if c == ARGV[3] then return {1, tonumber(string.sub(rec, 22))} end
  if c > ARGV[3] then return {2, 0} end
end
local id = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3] .. ':' .. id)
redis.call('PEXPIRE', KEYS[4], ARGV[6])
redis.call('PUBLISH', 'mg:bus', 'm' .. ARGV[8] .. ':' .. id .. ':' .. ARGV[4])
return {0, id}
"#;

/// COMMIT. KEYS: the user's dedup hash. ARGV: device, CMID20, msg_id.
/// Raises the device's latest; 1 if raised.
const COMMIT: &str = r#"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if rec and string.sub(rec, 1, 20) >= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
return 1
"#;

/// RANGE (read-only). KEYS: n, l of the channel. ARGV: the caller's head
/// (`-1`: only the head). Returns `{n, first_id, elements after head...}`.
const RANGE: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
if after < 0 or after >= n then return {n, n + 1} end
local len = redis.call('LLEN', KEYS[2])
local first = n - len + 1
local from = after + 1
if from < first then from = first end
local out = redis.call('LRANGE', KEYS[2], from - first, -1)
table.insert(out, 1, from)
table.insert(out, 1, n)
return out
"#;

/// JOIN (user side). KEYS: the user's rooms set. ARGV: room, cap.
/// 0 joined, 1 already a member, 2 at the cap.
const JOIN: &str = r#"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 2 end
redis.call('SADD', KEYS[1], ARGV[1])
return 0
"#;

/// ROUTE (rule 3). KEYS: the user's session hash. ARGV: device, record
/// `LOGIN20|NODE|GW|CONN|EPOCH`, `1` for Open / `0` for Reopen, uin.
/// `{0}` new or the same session, `{1,old}` replaced (old kicked through
/// the bus), `{2}` the announced session is older: kick it.
const ROUTE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return {0}
end
local function ident(r)
  local a = string.find(r, '|', 22, true)
  return string.sub(r, a + 1)
end
if ident(cur) == ident(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return {0}
end
local old, new = string.sub(cur, 1, 20), string.sub(ARGV[2], 1, 20)
if new > old or (new == old and ARGV[3] == '1') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PUBLISH', 'mg:bus', 'k' .. ARGV[4] .. '|' .. ARGV[1] .. '|' .. cur)
  return {1, cur}
end
return {2}
"#;

/// UNROUTE. KEYS: the user's session hash. ARGV: device, `GW|CONN|EPOCH`.
/// Deletes the device's record only if it is still that session.
const UNROUTE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local suffix = '|' .. ARGV[2]
if string.sub(cur, -string.len(suffix)) == suffix then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

/// The scripts, hashed once.
#[derive(Debug)]
pub struct Scripts {
    pub send: Script,
    pub commit: Script,
    pub range: Script,
    pub join: Script,
    pub route: Script,
    pub unroute: Script,
}

impl Scripts {
    /// Hashes every script (no I/O).
    pub fn new() -> Scripts {
        Scripts {
            send: Script::new(SEND),
            commit: Script::new(COMMIT),
            range: Script::new(RANGE),
            join: Script::new(JOIN),
            route: Script::new(ROUTE),
            unroute: Script::new(UNROUTE),
        }
    }

    /// Every script's source, for `SCRIPT LOAD`.
    pub fn sources(&self) -> [&'static str; 6] {
        [SEND, COMMIT, RANGE, JOIN, ROUTE, UNROUTE]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

/// The EVALSHA command of `script` with `keys` and `args` (for pipelines).
pub fn evalsha(script: &Script, keys: &[&str], args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(script.get_hash()).arg(keys.len()).arg(keys);
    for a in args {
        c.arg(*a);
    }
    c
}

/// `LOGIN20|NODE|GW|CONN|EPOCH` -> (node, gw, session).
pub fn parse_record(r: &[u8]) -> Option<(u64, u64, SessionRef)> {
    let s = std::str::from_utf8(r).ok()?;
    let f: Vec<u64> = s
        .split('|')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [_, node, gw, conn, epoch] = f[..] else {
        return None;
    };
    Some((node, gw, SessionRef { conn, epoch }))
}
