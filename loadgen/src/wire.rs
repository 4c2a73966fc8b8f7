//! The parent <-> worker protocol: one JSON object per line. The parent
//! writes a [`WorkerSpec`] then [`ToWorker`] commands to the worker's
//! stdin; the worker writes [`FromWorker`] reports to its stdout. A closed
//! stdin means stop, so workers never outlive their parent for long.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::chat::Mode;
use crate::shard::Share;
use crate::stats::{Counters, Stats};

/// Everything a worker needs to run its share of the sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub id: u32,
    pub addr: SocketAddr,
    pub share: Share,
    /// Sessions per source address (see `shard::source_addr`).
    pub per_source: u64,
    /// The uin of global session `i` is `uin_base + i`.
    pub uin_base: u64,
    /// The token secret, hex.
    pub secret_hex: String,
    pub token_ttl_s: u64,
    /// Connects per second for this worker; 0 means as fast as possible.
    pub rate: f64,
    /// Most sessions connecting or logging in at once.
    pub max_inflight: u32,
    pub forced_heartbeat_ms: Option<u32>,
    /// `NetworkType` sent in LOGIN.
    pub network: i32,
    pub connect_timeout_ms: u64,
    pub login_timeout_ms: u64,
    /// After GOAWAY, log in again once its delay has passed (storm).
    pub reconnect_on_goaway: bool,
    /// The worker stops by itself after this long, whatever happens.
    pub deadline_ms: u64,
    /// How often the worker reports progress.
    pub progress_ms: u64,
}

/// A chat phase as a worker runs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChatPlan {
    pub mode: Mode,
    /// Messages per second over all `sessions` of the run; each worker
    /// takes its share. Unused when `window` is set.
    pub rate: f64,
    /// Sessions in the whole run.
    pub sessions: u64,
    pub payload: usize,
    pub duration_ms: u64,
    /// Pipelined instead of paced: each sender keeps this many SENDs
    /// unacknowledged and sends the next as each SEND_ACK arrives.
    pub window: u32,
    /// Only sessions `0..senders` (global index) send; 0 = all of them.
    pub senders: u64,
}

/// Commands to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToWorker {
    /// Answer at once with [`FromWorker::Snap`] carrying this id.
    Snap { id: u32 },
    /// The storm starts now: time re-logins from here.
    StormStart,
    /// Every logged-in session JOINs its room (rooms mode).
    ChatJoin { mode: Mode },
    /// Start the chat phase.
    ChatStart(ChatPlan),
    /// Report [`FromWorker::Final`], close everything and exit.
    Stop,
}

/// Reports from a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum FromWorker {
    Progress {
        worker: u32,
        /// Every session of the share has logged in or failed.
        ramp_done: bool,
        /// Unix µs when the ramp finished (0 before).
        ramp_end_unix_us: u64,
        counters: Counters,
    },
    Snap {
        worker: u32,
        id: u32,
        counters: Counters,
    },
    Final {
        worker: u32,
        /// Peak resident memory of the worker, KiB (VmHWM).
        peak_rss_kib: u64,
        stats: Box<Stats>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_reports_are_single_json_lines() {
        let c = serde_json::to_string(&ToWorker::Snap { id: 3 }).unwrap();
        assert_eq!(c, r#"{"cmd":"snap","id":3}"#);
        assert_eq!(
            serde_json::from_str::<ToWorker>(&c).unwrap(),
            ToWorker::Snap { id: 3 }
        );
        let mut stats = Box::<Stats>::default();
        stats.counters.chat_room_high.insert(3, 9);
        let r = FromWorker::Final {
            worker: 2,
            peak_rss_kib: 10,
            stats,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<FromWorker>(&line).unwrap(), r);
    }
}
