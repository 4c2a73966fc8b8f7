//! How a run of N sessions is spread: over child processes, each under the
//! open-file limit, and over loopback source addresses and ports, so that
//! neither file descriptors nor ports run out. Pure arithmetic; the caller
//! reads the limits.
//!
//! Every session gets its own source address and port, bound explicitly:
//! letting the kernel pick a port at `connect` time costs a scan of the
//! ports in use that grows with them (measured: 18,000 connects from one
//! address took 4.8 s of system time with the kernel picking, 0.47 s
//! spread over 9 addresses), while an explicit `bind` is one lookup.

use std::net::{Ipv4Addr, SocketAddrV4};

/// File descriptors a worker keeps for itself: stdio, epoll, waker, the
/// stdin thread, /proc reads, and slack.
pub const FD_RESERVE: u64 = 64;

/// The first source address handed out: 127.0.0.2 (127.0.0.1 is left to
/// everything else on the machine).
pub const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// One child's share: global session indices `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    pub start: u64,
    pub count: u64,
}

/// Sessions one worker may hold under a per-process open-file limit.
pub fn per_worker(nofile: u64) -> u64 {
    nofile.saturating_sub(FD_RESERVE).max(1)
}

/// Splits `n` sessions into the fewest shares of at most `cap` each (and at
/// least `min_workers` shares when `n` allows), as evenly as possible:
/// sizes differ by at most one.
pub fn split(n: u64, cap: u64, min_workers: u64) -> Vec<Share> {
    if n == 0 {
        return Vec::new();
    }
    let cap = cap.max(1);
    let workers = n.div_ceil(cap).max(min_workers.min(n)).max(1);
    let base = n / workers;
    let extra = n % workers;
    let mut start = 0;
    (0..workers)
        .map(|w| {
            let count = base + u64::from(w < extra);
            let s = Share { start, count };
            start += count;
            s
        })
        .collect()
}

/// The first source port bound explicitly. Ports below stay for services
/// (the gateway's 7000 among them).
pub const FIRST_PORT: u16 = 10_000;
/// Ports available to each source address.
pub const PORTS: u64 = 65_535 - FIRST_PORT as u64 + 1;
/// Default sessions per source address: about three quarters of
/// [`PORTS`], so a port taken by someone else can fall back to the
/// kernel's choice without crowding the rest.
pub const DEFAULT_PER_SOURCE: u64 = 40_000;

/// Sessions per source address from the ephemeral port range `lo..=hi`:
/// three quarters of it. Used for advice when the kernel picks ports.
pub fn per_source(lo: u16, hi: u16) -> u64 {
    let range = u64::from(hi.saturating_sub(lo)) + 1;
    (range * 3 / 4).max(1)
}

/// The source address and port of global session `index` when each
/// address carries `per_source` sessions (at most [`PORTS`]): 127.0.0.2
/// ports 10000.., then 127.0.0.3, ... carrying on into 127.0.1.0 and
/// beyond; `None` past 127.255.255.254.
pub fn source_addr(index: u64, per_source: u64) -> Option<SocketAddrV4> {
    let per = per_source.clamp(1, PORTS);
    let n = index / per;
    let first = u32::from(FIRST_SOURCE);
    let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
    let a = u64::from(first) + n;
    let port = FIRST_PORT + (index % per) as u16;
    (a <= u64::from(last)).then(|| SocketAddrV4::new(Ipv4Addr::from(a as u32), port))
}

/// How many source addresses `n` sessions need.
pub fn sources_needed(n: u64, per_source: u64) -> u64 {
    n.div_ceil(per_source.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_the_cap_and_covers_everything() {
        for (n, cap) in [(1, 10), (10, 10), (11, 10), (1_000_000, 19_936), (7, 3)] {
            let shares = split(n, cap, 1);
            assert_eq!(shares.iter().map(|s| s.count).sum::<u64>(), n);
            assert!(shares.iter().all(|s| s.count <= cap && s.count > 0));
            assert_eq!(shares.len() as u64, n.div_ceil(cap));
            let mut next = 0;
            for s in &shares {
                assert_eq!(s.start, next, "shares are contiguous");
                next += s.count;
            }
            let max = shares.iter().map(|s| s.count).max().unwrap_or(0);
            let min = shares.iter().map(|s| s.count).min().unwrap_or(0);
            assert!(max - min <= 1, "{n}/{cap}: uneven {min}..{max}");
        }
    }

    #[test]
    fn c1m_under_twenty_thousand_files_needs_51_workers() {
        let cap = per_worker(20_000);
        assert_eq!(cap, 19_936);
        assert_eq!(split(1_000_000, cap, 1).len(), 51);
    }

    #[test]
    fn min_workers_spreads_small_runs() {
        assert_eq!(split(100, 1000, 2).len(), 2);
        assert_eq!(split(1, 1000, 4).len(), 1);
        assert!(split(0, 1000, 4).is_empty());
    }

    fn at(a: u8, b: u8, c: u8, port: u16) -> Option<SocketAddrV4> {
        Some(SocketAddrV4::new(Ipv4Addr::new(127, a, b, c), port))
    }

    #[test]
    fn source_addresses_change_every_per_source_sessions() {
        let per = DEFAULT_PER_SOURCE;
        assert_eq!(source_addr(0, per), at(0, 0, 2, 10_000));
        assert_eq!(source_addr(per - 1, per), at(0, 0, 2, 49_999));
        assert_eq!(source_addr(per, per), at(0, 0, 3, 10_000));
        assert_eq!(source_addr(254 * per + 5, per), at(0, 1, 0, 10_005));
        assert_eq!(sources_needed(1_000_000, per), 25);
        assert_eq!(source_addr(u64::from(u32::MAX), 1), None);
    }

    #[test]
    fn no_two_sessions_share_a_source_and_ports_stay_in_range() {
        let per = 1_000;
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let a = source_addr(i, per).unwrap();
            assert!(a.port() >= FIRST_PORT);
            assert!(seen.insert(a), "{a} handed out twice");
        }
        // A per-source above the ports there are is clamped, not wrapped.
        let a = source_addr(PORTS, u64::MAX).unwrap();
        assert_eq!(
            a,
            SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), FIRST_PORT)
        );
    }

    #[test]
    fn per_source_advice_from_the_port_range() {
        assert_eq!(per_source(32768, 60999), 21_174);
    }
}
