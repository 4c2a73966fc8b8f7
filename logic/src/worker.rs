//! A shard's thread: receive batches of [`ShardMsg`] from the network
//! thread and from peer shards over crossbeam channels, run them through
//! the sans-io [`Shard`], submit the turn's batch to the writer thread
//! (never waiting for the store), and flush the turn's outputs once the
//! batch is durable (see [`crate::durable`]):
//! link bytes to the network thread first (one message and one wake per
//! turn), then messages to peers (one batch per peer per turn). That order
//! is what keeps a SYNC_ACK behind the PUSHes of its parts (see
//! [`crate::shard::Outbox`]). Outputs waiting for a sync are released in
//! turn order; the shard goes on with new turns meanwhile.
//!
//! A store failure stops the process (fail-stop): the outputs of the
//! failed turn are never released, and the gateways answer UNAVAILABLE
//! until the server is back (PROTOCOL.md rule 13).

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::durable::Durability;
use crate::metrics::ShardStats;
use crate::shard::{Outbox, Shard, ShardMsg};

/// What a shard's queue carries.
#[derive(Debug)]
pub enum Input {
    Batch(Vec<ShardMsg>),
    /// Every batch with a ticket up to this one is written (a wake-up:
    /// the shard reads the counters).
    Written(u64),
    /// Every batch with a ticket up to this one is synced.
    Synced(u64),
    Stop,
}

/// Logs `why` and ends the process: the store can no longer be trusted
/// to hold what the next answer would claim.
pub fn fatal(why: &str) -> ! {
    tracing::error!("{why}; stopping (nothing unstored was acknowledged)");
    eprintln!("logic: fatal: {why}");
    std::process::exit(70)
}

/// Link bytes for gateways, from a shard to the network thread.
pub type IoBatch = Vec<(u64, Bytes)>;

/// How a shard reaches the network thread: a queue plus its doorbell.
#[derive(Debug, Clone)]
pub struct IoSender {
    pub tx: Sender<IoBatch>,
    pub waker: Arc<mio::Waker>,
}

/// Most queued batches handled in one turn before flushing.
const MAX_BATCHES_PER_TURN: usize = 64;
/// How often retention is applied to idle channels.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Wall-clock milliseconds since the Unix epoch (PUSH `sent_at_ms`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One turn's outputs waiting for their batch to be durable.
#[derive(Debug)]
struct Held {
    ticket: u64,
    io: Vec<(u64, BytesMut)>,
    to_shard: Vec<Vec<ShardMsg>>,
}

/// Starts shard `me` on its own thread.
pub fn spawn(
    me: usize,
    shard: Shard,
    rx: Receiver<Input>,
    peers: Vec<Sender<Input>>,
    io: IoSender,
    stats: Arc<ShardStats>,
    durability: Arc<Durability>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{me}"))
        .spawn(move || run(me, shard, &rx, &peers, &io, &stats, &durability))
}

fn run(
    me: usize,
    mut shard: Shard,
    rx: &Receiver<Input>,
    peers: &[Sender<Input>],
    io: &IoSender,
    stats: &ShardStats,
    durability: &Durability,
) {
    let shards = peers.len();
    let mut out = Outbox::new(me, shards);
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut last_ticket = 0;
    let mut last_sweep = now_ms();
    loop {
        let mut next = match rx.recv_timeout(SWEEP_EVERY) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = now_ms();
        let mut turns = 0;
        let mut stop = false;
        while let Some(input) = next.take() {
            match input {
                Input::Stop => {
                    stop = true;
                    break;
                }
                Input::Written(_) | Input::Synced(_) => {}
                Input::Batch(msgs) => {
                    for m in msgs {
                        shard.handle(now, m, &mut out);
                    }
                }
            }
            turns += 1;
            if turns < MAX_BATCHES_PER_TURN {
                next = rx.try_recv().ok();
            }
        }
        if let Some(e) = shard.take_fault() {
            fatal(&format!("shard {me}: store read failed: {e}"));
        }
        if !out.batch.is_empty() {
            last_ticket = durability.submit(me, std::mem::take(&mut out.batch));
        }
        // Published before the flush, so whoever sees this turn's output
        // also sees its counters.
        stats.publish(&shard);
        let has_output = !out.io.is_empty() || out.to_shard.iter().any(|v| !v.is_empty());
        let released = durability.released();
        if has_output {
            if held.is_empty() && last_ticket <= released {
                flush(&mut out.io, &mut out.to_shard, peers, io);
            } else {
                let fresh = || (0..shards).map(|_| Vec::new()).collect();
                held.push_back(Held {
                    ticket: last_ticket,
                    io: std::mem::take(&mut out.io),
                    to_shard: std::mem::replace(&mut out.to_shard, fresh()),
                });
            }
        }
        while held.front().is_some_and(|h| h.ticket <= released) {
            if let Some(mut h) = held.pop_front() {
                flush(&mut h.io, &mut h.to_shard, peers, io);
            }
        }
        if now.saturating_sub(last_sweep) >= SWEEP_EVERY.as_millis() as u64 {
            shard.sweep(now);
            last_sweep = now;
        }
        if stop {
            return;
        }
    }
}

fn flush(
    io_out: &mut Vec<(u64, BytesMut)>,
    to_shard: &mut [Vec<ShardMsg>],
    peers: &[Sender<Input>],
    io: &IoSender,
) {
    if !io_out.is_empty() {
        let batch: IoBatch = io_out.drain(..).map(|(gw, b)| (gw, b.freeze())).collect();
        // Send fails only when the network thread is gone (shutdown).
        if io.tx.send(batch).is_ok() {
            let _ = io.waker.wake();
        }
    }
    for (peer, msgs) in peers.iter().zip(to_shard.iter_mut()) {
        if !msgs.is_empty() {
            let _ = peer.send(Input::Batch(std::mem::take(msgs)));
        }
    }
}
