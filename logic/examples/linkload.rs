//! Bounded load against a running `logic` server over the link protocol:
//! fake gateways (one thread pair each) open sessions, join rooms, then
//! pipeline SENDs and read back every ACK and PUSH. Reports SENDs/s, PUSH
//! deliveries/s and SEND->ACK latency. Stops after the configured message
//! count or the time limit, whichever comes first.
//!
//! ```text
//! cargo build --release -p millgate-logic --examples
//! target/release/logic --listen 127.0.0.1:7700 &
//! target/release/examples/linkload --addr 127.0.0.1:7700
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb;

#[derive(Debug, Clone, Parser)]
struct Args {
    /// The logic server's link address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    addr: SocketAddr,
    /// Fake gateways (one link connection each).
    #[arg(long, default_value_t = 2)]
    gateways: u64,
    /// Sessions per gateway.
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// Rooms; session i of every gateway joins room i % rooms.
    #[arg(long, default_value_t = 100)]
    rooms: u64,
    /// SENDs per gateway.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// SENDs in flight per gateway.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// SEND body size in bytes.
    #[arg(long, default_value_t = 64)]
    body: usize,
    /// First uin; by default derived from the clock, so repeated runs
    /// against one server use fresh users (dedup state is per user).
    #[arg(long)]
    uin_base: Option<u64>,
    /// Hard time limit for the send phase, seconds.
    #[arg(long, default_value_t = 60)]
    limit_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.uin_base.is_none() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        args.uin_base = Some((nanos % 1_000_000) as u64 * 1_000_000_000);
    }
    if args.sessions % args.rooms != 0 {
        bail!("--sessions must be a multiple of --rooms");
    }
    let barrier = Arc::new(Barrier::new(args.gateways as usize + 1));
    let pushes = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for g in 0..args.gateways {
        let (args, barrier, pushes) = (args.clone(), barrier.clone(), pushes.clone());
        handles.push(std::thread::spawn(move || {
            gateway(g, &args, &barrier, &pushes)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut acked = 0;
    for h in handles {
        let (n, hst) = h
            .join()
            .map_err(|_| anyhow::anyhow!("gateway thread panicked"))??;
        acked += n;
        hist.add(hst)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let pushed = pushes.load(Ordering::Relaxed);
    println!(
        "gateways={} sessions/gw={} rooms={} members/room={} body={}B window={}",
        args.gateways,
        args.sessions,
        args.rooms,
        args.gateways * args.sessions / args.rooms,
        args.body,
        args.window
    );
    println!(
        "sends acked={acked} in {secs:.2}s: {:.0} SEND/s, {pushed} pushes: {:.0} PUSH/s",
        acked as f64 / secs,
        pushed as f64 / secs
    );
    println!(
        "SEND->ACK latency us: p50={} p99={} p99.9={} max={}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    Ok(())
}

fn session(a: &Args, g: u64, i: u64) -> (SessionRef, u64) {
    let base = a.uin_base.unwrap_or(0);
    let s = SessionRef {
        conn: i,
        epoch: i + 1,
    };
    (s, base + g * 1_000_000 + i + 1)
}

fn client_frame<M: Message>(kind: Kind, seq: u32, msg: &M) -> BytesMut {
    let mut f = BytesMut::new();
    codec::encode(&mut f, kind, seq, msg);
    f
}

fn gateway(
    g: u64,
    a: &Args,
    barrier: &Barrier,
    pushes: &AtomicU64,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut w = TcpStream::connect(a.addr).context("connect")?;
    w.set_nodelay(true)?;
    let mut r = w.try_clone()?;
    r.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = BytesMut::new();
    link::encode_hello(&mut out, 0x1000 + g, 0x1000 + g);
    for i in 0..a.sessions {
        let (s, uin) = session(a, g, i);
        link::encode_open(&mut out, s, uin, 1, logic::worker::now_ms());
        let f = client_frame(
            Kind::Join,
            0,
            &pb::Join {
                channel: 1 + i % a.rooms,
            },
        );
        link::encode_client(&mut out, s, uin, 1, &f);
    }
    w.write_all(&out)?;
    let mut rbuf = BytesMut::new();
    let mut joins = 0;
    while joins < a.sessions {
        joins += read_batch(&mut r, &mut rbuf, |_, _, _| {})?;
    }
    barrier.wait();

    let members_here = a.sessions / a.rooms;
    let expect_pushes = a.messages * a.gateways * members_here;
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.messages).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let (credit_tx, credit_rx) = mpsc::channel::<()>();
    let writer = {
        let (a, sent_at) = (a.clone(), sent_at.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let body = Bytes::from(vec![7u8; a.body]);
            let mut out = BytesMut::new();
            let mut inflight = 0;
            for m in 0..a.messages {
                while inflight >= a.window {
                    if credit_rx.recv().is_err() {
                        // The reader hit the time limit.
                        return Ok(());
                    }
                    inflight -= 1;
                }
                while credit_rx.try_recv().is_ok() {
                    inflight -= 1;
                }
                let (s, uin) = session(&a, g, m % a.sessions);
                let req = pb::SendReq {
                    channel: 1 + (m % a.sessions) % a.rooms,
                    client_msg_id: m + 1,
                    body: body.clone(),
                };
                link::encode_client(
                    &mut out,
                    s,
                    uin,
                    1,
                    &client_frame(Kind::Send, m as u32, &req),
                );
                sent_at[m as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                inflight += 1;
                if out.len() > 32 * 1024 || inflight >= a.window {
                    w.write_all(&out)?;
                    out.clear();
                }
            }
            w.write_all(&out)?;
            Ok(())
        })
    };
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut acks, mut pushed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(a.limit_secs);
    while (acks < a.messages || pushed < expect_pushes) && Instant::now() < deadline {
        read_batch(&mut r, &mut rbuf, |kind, seq, n| match kind {
            Kind::SendAck => {
                let sent = sent_at[seq as usize].load(Ordering::Relaxed);
                let now = t0.elapsed().as_nanos() as u64;
                let _ = hist.record(now.saturating_sub(sent) / 1_000);
                acks += 1;
                let _ = credit_tx.send(());
            }
            Kind::Push => pushed += n as u64,
            _ => {}
        })?;
    }
    pushes.fetch_add(pushed, Ordering::Relaxed);
    drop(credit_tx);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok((acks, hist))
}

/// Reads once and handles every whole frame: `f(kind, seq, targets)`.
/// Returns the number of client frames seen (counted per Deliver).
fn read_batch(
    r: &mut TcpStream,
    rbuf: &mut BytesMut,
    mut f: impl FnMut(Kind, u32, usize),
) -> anyhow::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let n = r.read(&mut buf).context("link read")?;
    if n == 0 {
        bail!("logic closed the link");
    }
    rbuf.extend_from_slice(&buf[..n]);
    let mut seen = 0;
    while let Some(m) = link::decode(rbuf, link::DEFAULT_MAX_LINK_FRAME)? {
        if let LinkMsg::Deliver { targets, frame } = m {
            let h = codec::peek_header(&frame, usize::MAX)?.context("short frame")?;
            f(h.kind, h.seq, targets.len());
            seen += 1;
        }
    }
    Ok(seen)
}
