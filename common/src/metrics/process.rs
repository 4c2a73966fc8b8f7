//! The standard `process_*` metrics, read from `/proc/self` at scrape
//! time: CPU seconds, resident and virtual memory, threads, start time
//! (`/proc/self/stat`), open fds (`/proc/self/fd`), the fd limit
//! (`getrlimit(RLIMIT_NOFILE)`). A value that cannot be read (no `/proc`)
//! is left out rather than reported as 0.

use std::fmt;

use nix::sys::resource::{Resource, getrlimit};
use nix::unistd::{SysconfVar, sysconf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The collector; reads the clock tick and page size once.
#[derive(Debug)]
pub(super) struct Process {
    ticks_per_sec: f64,
    page_bytes: u64,
    /// Boot time, seconds since the epoch (`btime` of `/proc/stat`).
    boot_secs: Option<f64>,
}

/// A gauge's value: counts and bytes print as integers.
enum Value {
    Int(u64),
    Float(f64),
}

/// What `/proc/self/stat` says, in ticks and pages.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_ticks: u64,
    threads: u64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

impl Process {
    pub(super) fn new() -> Process {
        let conf = |v| sysconf(v).ok().flatten().filter(|n| *n > 0);
        Process {
            ticks_per_sec: conf(SysconfVar::CLK_TCK).unwrap_or(100) as f64,
            page_bytes: conf(SysconfVar::PAGE_SIZE).map_or(4096, |n| n as u64),
            boot_secs: std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(boot_time),
        }
    }
}

/// `btime` of a `/proc/stat` text.
fn boot_time(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

/// Parses `/proc/self/stat` (the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 of proc(5) (`state`) is index 0 here.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: n(14)? + n(15)?,
        threads: n(20)?,
        start_ticks: n(22)?,
        vsize_bytes: n(23)?,
        rss_pages: n(24)?,
    })
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut gauge = |name: &str, help: &str, v: Value| -> Result<(), fmt::Error> {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            match v {
                Value::Int(n) => m.encode_gauge(&n),
                Value::Float(x) => m.encode_gauge(&x),
            }
        };
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat);
        if let Some(s) = &stat {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Value::Int(s.rss_pages.saturating_mul(self.page_bytes)),
            )?;
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Value::Int(s.vsize_bytes),
            )?;
            gauge(
                "process_threads",
                "Number of OS threads.",
                Value::Int(s.threads),
            )?;
            if let Some(boot) = self.boot_secs {
                gauge(
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds.",
                    Value::Float(boot + s.start_ticks as f64 / self.ticks_per_sec),
                )?;
            }
        }
        if let Some(n) = open_fds() {
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                Value::Int(n),
            )?;
        }
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Value::Int(soft),
            )?;
        }
        if let Some(s) = &stat {
            let secs = s.cpu_ticks as f64 / self.ticks_per_sec;
            enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, f64>(&secs, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 50 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 200,
                threads: 7,
                start_ticks: 123456,
                vsize_bytes: 104_857_600,
                rss_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1"), None);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\nprocesses 5\n"),
            Some(1.7e9)
        );
    }

    #[test]
    fn this_process_reads_as_alive() {
        let text = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        let s = parse_stat(&text).expect("parses");
        assert!(
            s.threads >= 1 && s.rss_pages > 0 && s.vsize_bytes > 0,
            "{s:?}"
        );
        assert!(open_fds().expect("/proc/self/fd") >= 3);
        let p = Process::new();
        let boot = p.boot_secs.expect("btime");
        let start = boot + s.start_ticks as f64 / p.ticks_per_sec;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        // Started within the last day, not in the future (2 s of rounding).
        assert!(
            start <= now + 2.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
