//! Millgate's logic tier: the server behind the gateways that routes users
//! to sessions, numbers and stores messages, deduplicates SENDs and fans
//! PUSHes out. It speaks only the link protocol ([`proto::link`]); client
//! frames reach it inside `Client` link frames and leave it inside
//! `Deliver`s.
//!
//! # Layers
//!
//! | module | owns | io? |
//! |--------|------|-----|
//! | [`channel`] | channel ids; one loaded channel: `msg_id` counter (rule 6), newest PUSH frames (rule 9) | no |
//! | [`dedup`] | per (`uin`, `device`) "latest" `client_msg_id` and in-flight SENDs (rule 7) | no |
//! | [`router`] | `uin` -> sessions with login times, duplicate-login kicks (rule 3), joined rooms | no |
//! | [`shard`] | one shard: the above glued into a message-in / outputs-out state machine; the online index | no |
//! | [`store`] | the durable state behind one trait: [`store::FjallStore`] on disk, [`store::MemStore`] | disk |
//! | [`durable`] | when a written batch counts as durable (`--fsync`), the group-commit sync thread | thread |
//! | [`reply`] | encoding client frames into link frames | no |
//! | [`worker`] | a shard's thread: turns, store writes, outputs held until durable | threads |
//! | [`net`] | the mio loop: link listener and gateway connections | sockets |
//! | [`metrics`] | counters and the `/metrics` HTTP endpoint | socket |
//! | [`config`], [`server`] | settings (defaults, TOML, flags) and wiring | - |
//!
//! Everything that decides anything is sans-io and takes time as an
//! argument; `shard::tests` runs whole flows over several shards in one
//! thread (with the turns, releases and crashes chosen by proptest in
//! `shard::prop_tests`), and `tests/` runs the binary against fake
//! gateways, killing it with SIGKILL in `tests/durable.rs` and
//! `tests/crash_loop.rs`.
//!
//! # Durability (issue 11)
//!
//! State lives in an embedded store, `--data-dir DIR` (default
//! `./millgate-data`, created if missing; `DIR/logic.lock` keeps a second
//! server off it). fjall 3 was chosen by measurement (see [`store`] for the
//! figures, the key layout and the interface later backends implement).
//! `--data-dir :memory:` keeps everything in memory: **not durable**, for
//! tests and benchmarks only.
//!
//! Each shard turn submits one batch (messages, heads, dedup records,
//! membership) to the writer thread, which merges what is queued into one
//! store commit ([`durable`]); the shard never waits for the store, and
//! the turn's outputs, SEND_ACKs and PUSHes and JOIN_ACKs and
//! messages to other shards alike, are released only once that batch is
//! durable in the configured sense, so no client ever sees an id a crash
//! could give to another body:
//!
//! - `--fsync batch` (default): once the batch reached the OS (it
//!   survives kill -9 and any logic crash); a background fdatasync runs at
//!   least every `--fsync-interval-ms` (100), which bounds what a power
//!   loss or kernel crash can take.
//! - `--fsync always`: once an fdatasync covers the batch (it survives a
//!   power loss). Group commit: one fdatasync covers every shard's batches
//!   written before it started, and a shard goes on with its next turns
//!   while the sync runs, releasing outputs in turn order.
//!
//! What survives a crash: every acknowledged message (channel, id, sender,
//! device, time, body: the stored PUSH frame), each channel's newest id,
//! each device's dedup latest, both directions of room membership. Not the
//! router: the gateways re-announce live sessions (`Reopen`). A torn
//! journal tail is cut off at start; corruption in the middle refuses to
//! start naming the file ([`store`]). A failing store stops the process
//! (fail-stop): nothing unstored is ever acknowledged.
//!
//! Restart reads no message: fjall replays at most its journals (256 MiB)
//! and every head, membership and dedup record is read when first needed.
//!
//! # Threads and sharding
//!
//! One network thread and `--threads` shard threads (default: one per
//! core). A shard owns the users whose uin hashes to it (*user role*:
//! router entry, dedup state, room index) and the channels whose id hashes
//! to it (*channel role*: counter, members, store); an inbox `2^63 | uin`
//! lives on its owner's shard. Shards share no state: they talk only
//! through unbounded crossbeam channels, one per shard, carrying batches.
//! There is no lock on the message path.
//!
//! A shard's turn handles up to 64 queued batches, then flushes: its link
//! output to the network thread (one queue message and one `mio::Waker`
//! ring per turn), then one batch per peer shard. The network thread puts
//! each gateway's bytes on that gateway's primary (oldest live) link
//! connection and writes them with `writev`, many frames per syscall.
//!
//! # Flows
//!
//! - **Open / Reopen / Close** go to the uin's shard. The router applies
//!   rule 3 and the epoch fencing (see [`router`]); a displaced session is
//!   kicked with a `Kick` to whichever gateway holds it. The uin's current
//!   session list is then copied (*presence*) to every other shard holding
//!   one of its rooms, so that fan-out is local to the channel's shard.
//! - **Open / Reopen** load the user's rooms from the store (if not in
//!   memory) before routing; the presence copy lists, per shard, the rooms
//!   it hosts, and each channel shard keeps only the *online* members of
//!   its rooms (`shard/online.rs`), so fan-out never touches an offline
//!   member and memory follows who is online.
//! - **SEND**: the uin's shard validates (channel 0 INVALID, body over
//!   `max_send_body` TOO_LARGE, room not joined NOT_MEMBER) and runs dedup
//!   (loading the device's latest from the store first); a new SEND goes
//!   to the channel's shard, which assigns the next `msg_id`, encodes the
//!   PUSH frame once, puts message, head and dedup record in its turn's
//!   batch (plus the delete of the message the count limit drops), answers
//!   SEND_ACK(OK) and fans out: one `Deliver` per gateway holding
//!   recipients, listing that gateway's sessions; all of it released once
//!   the batch is durable. It then reports the outcome back to the uin's
//!   shard, which advances "latest" only for stored messages, drops the
//!   superseded dedup record, and answers retries that arrived while the
//!   original was in flight.
//! - **Order (rule 8)**: all PUSHes of a channel are produced by its one
//!   shard, in `msg_id` order, through one FIFO to the network thread and
//!   one connection per gateway.
//! - **JOIN / LEAVE**: the uin's shard updates its room index and stores
//!   both directions (user -> rooms, room -> members) in its batch (JOIN/
//!   LEAVE of an inbox is NOT_MEMBER, of channel 0 INVALID, LEAVE of a room
//!   not joined NOT_MEMBER; JOIN of a joined room is OK; a JOIN past
//!   `max_rooms_per_user`, default 1,000, is TOO_LARGE); the channel's
//!   shard then counts the user online or offline there (one set update:
//!   a JOIN costs the same for the first and the thousandth room) and
//!   answers with the channel's newest id.
//! - **SYNC**: the uin's shard splits the user's channels (joined rooms and
//!   the inbox) by shard and sends each shard its part; each pushes the
//!   retained messages after the listed heads, in order (the newest 64
//!   from memory, older ones from the store), and reports its heads; the
//!   uin's shard answers SYNC_ACK once all parts are in. With the room cap
//!   a SYNC_ACK is at most 24 bytes x 1,001 = 24,024 bytes, within the
//!   client's 65,536-byte maximum body (the config refuses a cap above
//!   2,729). Because
//!   a shard flushes link output before peer messages and the queue to the
//!   network thread is one FIFO, the SYNC_ACK always follows the PUSHes.
//! - **Gateway down**: when a gateway's last link connection closes, every
//!   shard drops its sessions (and the presence copies naming it). The
//!   notice travels in the same per-shard batches as the gateway's earlier
//!   frames, so it is ordered before anything from a reconnect. A gateway
//!   re-announces its live sessions with `Reopen`, which loses to a login
//!   made on another gateway meanwhile.
//!
//! # Limits and choices
//!
//! - Memory is bounded by what is active: a user's router entry and dedup
//!   state are evicted at the first sweep (every 5 s) after their last
//!   session ends and no SEND of theirs is in flight; a channel after
//!   `--evict-idle-secs` (30) unused. Both reload from the store, so a
//!   retry after reconnecting is still deduplicated.
//! - Shard queues are unbounded (bounded queues between shards that send
//!   to each other can deadlock); the backstop is per gateway: a gateway
//!   whose unsent backlog exceeds `max_gateway_backlog` is disconnected as
//!   a slow consumer, and its sessions catch up with SYNC.
//! - Retention (rule 9) on disk: the message the count limit drops is
//!   deleted in the same batch as the new one (a point delete, no scan),
//!   and messages past the age limit are dropped by a compaction filter
//!   as fjall compacts in the background; reads filter by age too, so
//!   nothing expired is ever served.
//!
//! # Measured
//!
//! The durable figures (restart time, disk per message, RSS per session
//! and channel, eviction, throughput in both fsync modes, crash loop) are
//! in the README's "Measured" section, from `examples/durable_bench.rs`
//! and `scripts/measure-chat`. The table below is the in-memory server of
//! issue 4 (`--data-dir :memory:`).
//!
//! `examples/linkload.rs` drives a running server through the link with
//! fake gateways (1,000 sessions each, 64-byte bodies). On the shared
//! 2-core development machine, with the load generator on the same two
//! cores and other builds running (so the spread between runs is wide):
//!
//! ```text
//! cargo build --release -p millgate-logic --bins --examples
//! target/release/logic --listen 127.0.0.1:7700 --data-dir :memory: &
//! target/release/examples/linkload --addr 127.0.0.1:7700 --messages 200000
//! ```
//!
//! | run (in this order, one server) | SEND/s | PUSH deliveries/s | SEND->ACK p50 / p99 |
//! |-----|-------:|------------------:|--------------------:|
//! | 2 gateways, 100 rooms of 20, window 512, 200k SENDs per gateway, 3 runs | 233k-332k | 4.7M-6.6M | 2.5-3.5 ms / 10.4-11.8 ms |
//! | same, `--rooms 10` (200 members), `--messages 20000` | 61k | 12.2M | 15.8 ms / 35.8 ms |
//! | 1 gateway, window 1 (`--gateways 1 --window 1 --limit-secs 5`) | 16k | 157k | 57 us / 102 us |
//! | first row with `--window 50000` (100k SENDs in flight: latency is queueing) | 195k | 3.9M | 433 ms / 890 ms |
//!
//! The machine's load average was 3.6 during these runs (other builds), so
//! take the rates as lower bounds: in quieter moments earlier builds
//! measured 291k-428k SEND/s on the first row and 17 us p50 on the third.
//! Each run uses fresh users who stay members of their rooms after their
//! sessions close, so by the last row every room has 70 to 270 members of
//! whom 20 are online. Fan-out walks only the online members (`Channel`
//! keeps that set): over the same six runs the shards used 257 + 281 CPU
//! ticks (`/proc/PID/task/*/stat` utime+stime) against 399 + 437 for the
//! build that walked every member; the network thread used 357. Peak RSS
//! (`VmHWM`): 154 MB.
//!
//! Sessions: `linkload --sessions 250000 --rooms 1000 --messages 1000`
//! (500,000 sessions on 2 gateways, each in one room of 500, opened and
//! joined in one burst) left the server at 281-289 MB RSS (peak 338-342
//! MB), about 600 bytes per routed session including allocator slack; two
//! runs.
#![forbid(unsafe_code)]

pub mod channel;
pub mod config;
pub mod dedup;
pub mod durable;
pub mod forwarded;
pub mod metrics;
pub mod net;
pub mod redis_node;
pub mod reply;
pub mod router;
pub mod server;
pub mod shard;
pub mod store;
pub mod worker;
