//! A shard's thread: receive batches of [`ShardMsg`] from the network
//! thread and from peer shards over crossbeam channels, run them through
//! the sans-io [`Shard`], and flush the turn's outputs: link bytes to the
//! network thread first (one message and one wake per turn), then messages
//! to peers (one batch per peer per turn). That order is what keeps a
//! SYNC_ACK behind the PUSHes of its parts (see [`crate::shard::Outbox`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::metrics::ShardStats;
use crate::shard::{Outbox, Shard, ShardConfig, ShardMsg};

/// What a shard's queue carries.
#[derive(Debug)]
pub enum Input {
    Batch(Vec<ShardMsg>),
    Stop,
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

/// Starts shard `me` on its own thread.
pub fn spawn(
    me: usize,
    cfg: ShardConfig,
    rx: Receiver<Input>,
    peers: Vec<Sender<Input>>,
    io: IoSender,
    stats: Arc<ShardStats>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{me}"))
        .spawn(move || run(me, cfg, &rx, &peers, &io, &stats))
}

fn run(
    me: usize,
    cfg: ShardConfig,
    rx: &Receiver<Input>,
    peers: &[Sender<Input>],
    io: &IoSender,
    stats: &ShardStats,
) {
    let mut shard = Shard::new(me, cfg);
    let mut out = Outbox::new(me, cfg.shards);
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
        if now.saturating_sub(last_sweep) >= SWEEP_EVERY.as_millis() as u64 {
            shard.sweep(now);
            last_sweep = now;
        }
        // Published before the flush, so whoever sees this turn's output
        // also sees its counters.
        stats.publish(&shard);
        flush(&mut out, peers, io);
        if stop {
            return;
        }
    }
}

fn flush(out: &mut Outbox, peers: &[Sender<Input>], io: &IoSender) {
    if !out.io.is_empty() {
        let batch: IoBatch = out.io.drain(..).map(|(gw, b)| (gw, b.freeze())).collect();
        // Send fails only when the network thread is gone (shutdown).
        if io.tx.send(batch).is_ok() {
            let _ = io.waker.wake();
        }
    }
    for (peer, msgs) in peers.iter().zip(out.to_shard.iter_mut()) {
        if !msgs.is_empty() {
            let _ = peer.send(Input::Batch(std::mem::take(msgs)));
        }
    }
}
