//! Measurements of the durable logic tier (issue 11), each driving a
//! `logic` process it starts itself (the binary beside this example, on
//! loopback) through the link protocol as a fake gateway:
//!
//! - `restart`: fill N messages (64-byte DMs into `--channels` inboxes of
//!   offline users, so retention keeps `channels x retention`), then SIGKILL
//!   the server and time its restart on the same data directory, from
//!   spawn to the first SEND_ACK (and check that id is newest + 1); report
//!   the data directory's size per retained message.
//! - `evict`: `--users` distinct users each log in, JOIN a room, SEND once
//!   and log out; the server's RSS before, at the peak and after eviction.
//! - `sessions`: RSS per online session (sessions opened, each in a room
//!   of its own) and per active channel (a message into each room).
//! - `fsync`: the disk's own fdatasync latency (append 128 bytes, then
//!   fdatasync), the floor under `--fsync always`.
//!
//! ```text
//! cargo build --release -p millgate-logic --bins --examples
//! target/release/examples/durable_bench restart --messages 10000000
//! target/release/examples/durable_bench evict --users 1000000
//! target/release/examples/durable_bench sessions --sessions 200000
//! target/release/examples/durable_bench fsync --dir /work/tmp
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use prost::Message;
use proto::codec::{self, Kind};
use proto::link::{self, LinkMsg, SessionRef};
use proto::pb;

#[derive(Debug, Parser)]
struct Args {
    /// Data directory (default: a fresh one under the system temp dir,
    /// removed afterwards).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Extra flags for the logic server, e.g. "--fsync always".
    #[arg(long, global = true, default_value = "")]
    logic_flags: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    Restart {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Inboxes the messages go to; with the default retention (1,000
        /// per channel) `channels x 1,000` are retained.
        #[arg(long, default_value_t = 10_000)]
        channels: u64,
        #[arg(long, default_value_t = 4_096)]
        window: u64,
    },
    Evict {
        #[arg(long, default_value_t = 1_000_000)]
        users: u64,
        #[arg(long, default_value_t = 1_000)]
        rooms: u64,
    },
    Sessions {
        #[arg(long, default_value_t = 200_000)]
        sessions: u64,
    },
    Fsync {
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        /// Bytes appended before each fdatasync.
        #[arg(long, default_value_t = 128)]
        bytes: usize,
        /// Extend the file first with set_len (sparse, as fjall
        /// preallocates its journals), so writes fill holes.
        #[arg(long)]
        sparse: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let flags: Vec<String> = args
        .logic_flags
        .split_whitespace()
        .map(String::from)
        .collect();
    match args.what {
        What::Restart {
            messages,
            channels,
            window,
        } => restart(&dir, &flags, messages, channels, window),
        What::Evict { users, rooms } => evict(&dir, &flags, users, rooms),
        What::Sessions { sessions } => sessions_rss(&dir, &flags, sessions),
        What::Fsync {
            count,
            bytes,
            sparse,
        } => fsync(&dir, count, bytes, sparse),
    }
}

/// The `logic` binary beside this example's directory.
fn logic_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("logic"))
        .context("no parent dir")?;
    if !bin.exists() {
        bail!(
            "{} missing: cargo build --release -p millgate-logic --bins",
            bin.display()
        );
    }
    Ok(bin)
}

struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Server {
    fn start(dir: &Path, listen: &str, flags: &[String]) -> anyhow::Result<Server> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(logic_bin()?)
                .args(["--listen", listen, "--metrics", "127.0.0.1:0", "--data-dir"])
                .arg(dir)
                .args(flags)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let out = child.stdout.take().context("stdout")?;
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(line)) = lines.next()
                && let Some(a) = line.strip_prefix("listening ")
                && let Some(Ok(m)) = lines.next()
                && let Some(m) = m.strip_prefix("metrics ")
            {
                return Ok(Server {
                    child,
                    addr: a.trim().parse()?,
                    metrics: m.trim().parse()?,
                });
            }
            let _ = child.wait();
            if Instant::now() > deadline {
                bail!("logic did not start on {listen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-KILL", &pid]).status()?;
        self.child.wait()?;
        Ok(())
    }

    /// The `logic_*` gauges of `/metrics`, one line.
    fn gauges(&self) -> String {
        let Ok(mut s) = TcpStream::connect(self.metrics) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .filter(|l| l.starts_with("logic_") && !l.contains("_total"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One link connection: frames are buffered and written in bulk.
struct Link {
    stream: TcpStream,
    out: BytesMut,
    rbuf: BytesMut,
}

impl Link {
    fn connect(addr: SocketAddr, gw: u64) -> anyhow::Result<Link> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut l = Link {
            stream,
            out: BytesMut::new(),
            rbuf: BytesMut::new(),
        };
        link::encode_hello(&mut l.out, gw, gw);
        Ok(l)
    }

    fn client<M: Message>(&mut self, s: SessionRef, uin: u64, kind: Kind, seq: u32, m: &M) {
        let mut f = BytesMut::new();
        codec::encode(&mut f, kind, seq, m);
        link::encode_client(&mut self.out, s, uin, 1, &f);
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Reads until at least `n` answers of `kind` came (decoding all that
    /// arrived); calls `f` on each and returns how many.
    fn wait(&mut self, kind: Kind, n: u64, mut f: impl FnMut(&[u8])) -> anyhow::Result<u64> {
        let mut got = 0;
        let mut buf = vec![0u8; 256 * 1024];
        while got < n {
            while let Some(m) = link::decode(&mut self.rbuf, link::DEFAULT_MAX_LINK_FRAME)? {
                if std::env::var_os("DEBUG").is_some() {
                    eprintln!("{m:?}");
                }
                if let LinkMsg::Deliver { frame, .. } = m
                    && let Some(h) = codec::peek_header(&frame, usize::MAX)?
                    && h.kind == kind
                {
                    f(&frame[codec::HEADER_LEN..]);
                    got += 1;
                }
            }
            if got >= n {
                break;
            }
            let k = self.stream.read(&mut buf)?;
            if k == 0 {
                bail!("logic closed the link");
            }
            self.rbuf.extend_from_slice(&buf[..k]);
        }
        Ok(got)
    }
}

fn sess(conn: u64) -> SessionRef {
    SessionRef { conn, epoch: 1 }
}

const SENDER: u64 = 9_000_000_000;
const INBOX: u64 = proto::INBOX_BIT;

/// On-disk size (allocated blocks) of everything under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

fn restart(
    dir: &Path,
    flags: &[String],
    messages: u64,
    channels: u64,
    window: u64,
) -> anyhow::Result<()> {
    let mut server = Server::start(dir, "127.0.0.1:0", flags)?;
    let addr = server.addr;
    let mut l = Link::connect(addr, 1)?;
    let s = sess(1);
    link::encode_open(&mut l.out, s, SENDER, 1, 1);
    // Bodies of random letters: they compress about as badly as text.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut body = move || {
        let b: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b'a' + (seed % 26) as u8
            })
            .collect();
        Bytes::from(b)
    };
    let t0 = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < messages {
        while sent < messages && sent - acked < window {
            sent += 1;
            let req = pb::SendReq {
                channel: INBOX | (1 + sent % channels),
                client_msg_id: sent,
                body: body(),
            };
            l.client(s, SENDER, Kind::Send, 0, &req);
        }
        l.flush()?;
        let batch = (window / 2).max(1).min(sent - acked);
        acked += l.wait(Kind::SendAck, batch, |_| {})?;
    }
    let fill = t0.elapsed();
    let retained = messages.min(channels * 1_000);
    println!(
        "filled {messages} messages into {channels} inboxes in {:.1} s ({:.0} msg/s); retained {retained}",
        fill.as_secs_f64(),
        messages as f64 / fill.as_secs_f64()
    );
    // Let the background sync and flushes settle, then measure the disk.
    std::thread::sleep(Duration::from_secs(2));
    let bytes = disk_usage(dir);
    println!(
        "disk {:.1} MiB = {:.1} bytes per retained 64-byte message (journals preallocate 64 MiB)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / retained as f64
    );
    drop(l);
    server.kill9()?;
    let t0 = Instant::now();
    let server = Server::start(dir, &addr.to_string(), flags)?;
    let listening = t0.elapsed();
    let mut l = Link::connect(server.addr, 2)?;
    link::encode_open(&mut l.out, sess(2), SENDER + 1, 1, 2);
    let ch = INBOX | 1;
    let req = pb::SendReq {
        channel: ch,
        client_msg_id: 1,
        body: body(),
    };
    l.client(sess(2), SENDER + 1, Kind::Send, 7, &req);
    l.flush()?;
    let mut id = 0;
    let _ = l.wait(Kind::SendAck, 1, |b| {
        id = pb::SendAck::decode(b).map_or(0, |a| a.msg_id);
    })?;
    let first_ack = t0.elapsed();
    let expected = (1..=messages).filter(|m| 1 + m % channels == 1).count() as u64 + 1;
    println!(
        "restart after SIGKILL: listening after {} ms, first SEND_ACK after {} ms (msg_id {id}, expected {expected})",
        listening.as_millis(),
        first_ack.as_millis()
    );
    if id != expected {
        bail!("wrong id after restart");
    }
    Ok(())
}

fn evict(dir: &Path, flags: &[String], users: u64, rooms: u64) -> anyhow::Result<()> {
    let mut flags = flags.to_vec();
    flags.extend(["--evict-idle-secs".into(), "2".into()]);
    let server = Server::start(dir, "127.0.0.1:0", &flags)?;
    let mut l = Link::connect(server.addr, 1)?;
    l.flush()?;
    std::thread::sleep(Duration::from_millis(500));
    let (base, _) = server.rss()?;
    println!("baseline RSS {} KiB", base);
    let t0 = Instant::now();
    const CHUNK: u64 = 2_000;
    let mut done = 0;
    let mut peak_seen = 0;
    while done < users {
        let n = CHUNK.min(users - done);
        for i in done..done + n {
            let uin = 1 + i;
            let s = sess(i);
            link::encode_open(&mut l.out, s, uin, 1, 1);
            l.client(
                s,
                uin,
                Kind::Join,
                1,
                &pb::Join {
                    channel: 1 + i % rooms,
                },
            );
            let req = pb::SendReq {
                channel: 1 + i % rooms,
                client_msg_id: 1,
                body: Bytes::from_static(b"hello from a user seen once......"),
            };
            l.client(s, uin, Kind::Send, 2, &req);
            link::encode_close(&mut l.out, s, uin, 1);
        }
        l.flush()?;
        let got = l.wait(Kind::SendAck, n, |_| {})?;
        if got != n {
            bail!("{got} acks for {n} sends");
        }
        done += n;
        if done % 100_000 == 0 {
            let (rss, _) = server.rss()?;
            peak_seen = peak_seen.max(rss);
            println!(
                "{done} users after {:.1} s, RSS {} KiB",
                t0.elapsed().as_secs_f64(),
                rss
            );
        }
    }
    let (rss, hwm) = server.rss()?;
    println!(
        "all {users} users done in {:.1} s: RSS {rss} KiB (peak {hwm} KiB)",
        t0.elapsed().as_secs_f64()
    );
    // Eviction: idle channels after 2 s, checked every 5 s.
    std::thread::sleep(Duration::from_secs(12));
    let (after, _) = server.rss()?;
    println!(
        "after eviction: RSS {after} KiB = baseline + {:.1} MB (target: within 64 MB)",
        (after.saturating_sub(base)) as f64 * 1024.0 / 1e6
    );
    println!("gauges: {}", server.gauges());
    Ok(())
}

fn sessions_rss(dir: &Path, flags: &[String], sessions: u64) -> anyhow::Result<()> {
    let server = Server::start(dir, "127.0.0.1:0", flags)?;
    let mut l = Link::connect(server.addr, 1)?;
    l.flush()?;
    std::thread::sleep(Duration::from_millis(500));
    let (base, _) = server.rss()?;
    // Sessions, each in a room of its own (a JOIN_ACK per session proves
    // it is routed).
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(5_000) {
        for &i in chunk {
            let s = sess(i);
            link::encode_open(&mut l.out, s, 1 + i, 1, 1);
            l.client(s, 1 + i, Kind::Join, 1, &pb::Join { channel: 1 + i });
        }
        l.flush()?;
        let _ = l.wait(Kind::JoinAck, chunk.len() as u64, |_| {})?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let (online, _) = server.rss()?;
    // One message into each room: every room becomes an active channel
    // (counter and newest message in memory, one online member).
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(5_000) {
        for &i in chunk {
            let req = pb::SendReq {
                channel: 1 + i,
                client_msg_id: 1,
                body: Bytes::from(vec![b'x'; 64]),
            };
            l.client(sess(i), 1 + i, Kind::Send, 2, &req);
        }
        l.flush()?;
        let _ = l.wait(Kind::SendAck, chunk.len() as u64, |_| {})?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let (active, _) = server.rss()?;
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 * 1024.0 / sessions as f64;
    println!(
        "RSS {base} KiB -> {online} KiB with {sessions} sessions (each in its own room): {:.0} bytes per online session",
        per(online, base)
    );
    println!(
        "-> {active} KiB with a message in each room: {:.0} bytes per active channel",
        per(active, online)
    );
    Ok(())
}

fn fsync(dir: &Path, count: u64, bytes: usize, sparse: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    if sparse {
        f.set_len(64 << 20)?;
        f.sync_all()?;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let rec = vec![7u8; bytes];
    for _ in 0..count {
        f.write_all(&rec)?;
        let t = Instant::now();
        f.sync_data()?;
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    drop(f);
    std::fs::remove_file(&path)?;
    println!(
        "fdatasync after a {bytes}-byte write{}, {count} times in {}: p50 {} us, p90 {} us, p99 {} us, max {} us",
        if sparse {
            " into a sparse preallocated file"
        } else {
            " appended"
        },
        dir.display(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.9),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    Ok(())
}
