//! Reading the machine: a process's resident memory and CPU time from
//! /proc, kernel slab memory, kernel knobs (sysctls), and the open-file
//! limit (`getrlimit`/`setrlimit` through nix).

use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Clock ticks per second of /proc/PID/stat times. Linux reports them in
/// USER_HZ, which is 100 on every architecture it exports to user space.
pub const USER_HZ: u64 = 100;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no field {field}")]
    Missing { path: PathBuf, field: &'static str },
    #[error("open-file limit: {0}")]
    Rlimit(nix::Error),
}

fn read(path: &Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.into(),
        source,
    })
}

/// The number after `field:` in a `key: value kB` file (status, meminfo).
pub fn field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn kib_of(path: PathBuf, field: &'static str) -> Result<u64, ProcError> {
    let text = read(&path)?;
    field_kib(&text, field).ok_or(ProcError::Missing { path, field })
}

/// Resident memory of `pid` (VmRSS), KiB.
pub fn rss_kib(pid: u32) -> Result<u64, ProcError> {
    kib_of(PathBuf::from(format!("/proc/{pid}/status")), "VmRSS")
}

/// Peak resident memory of this process (VmHWM), KiB.
pub fn self_peak_rss_kib() -> Result<u64, ProcError> {
    kib_of(PathBuf::from("/proc/self/status"), "VmHWM")
}

/// Kernel slab memory of the whole machine (`Slab` of /proc/meminfo), KiB.
pub fn slab_kib() -> Result<u64, ProcError> {
    kib_of(PathBuf::from("/proc/meminfo"), "Slab")
}

/// Memory available for new work (`MemAvailable`), KiB.
pub fn mem_available_kib() -> Result<u64, ProcError> {
    kib_of(PathBuf::from("/proc/meminfo"), "MemAvailable")
}

/// utime + stime from the text of /proc/PID/stat, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time used so far by `pid` (all threads), microseconds.
pub fn cpu_us(pid: u32) -> Result<u64, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = read(&path)?;
    let ticks = parse_cpu_ticks(&text).ok_or(ProcError::Missing {
        path,
        field: "utime",
    })?;
    Ok(ticks * 1_000_000 / USER_HZ)
}

/// A sysctl by its dotted name, trimmed.
pub fn sysctl(name: &str) -> Result<String, ProcError> {
    Ok(read(&sysctl_path(name))?.trim().to_string())
}

/// Sets a sysctl (root only).
pub fn set_sysctl(name: &str, value: &str) -> Result<(), ProcError> {
    let path = sysctl_path(name);
    std::fs::write(&path, value).map_err(|source| ProcError::Write { path, source })
}

fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// The ephemeral port range `net.ipv4.ip_local_port_range`.
pub fn port_range() -> Result<(u16, u16), ProcError> {
    let text = sysctl("net.ipv4.ip_local_port_range")?;
    let mut it = text.split_whitespace().filter_map(|w| w.parse().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) => Ok((lo, hi)),
        _ => Err(ProcError::Missing {
            path: sysctl_path("net.ipv4.ip_local_port_range"),
            field: "range",
        }),
    }
}

/// Raises this process's soft open-file limit to the hard one (children
/// inherit it) and returns the soft limit now in force.
pub fn raise_nofile() -> Result<u64, ProcError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(ProcError::Rlimit)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(ProcError::Rlimit)?;
        return Ok(hard);
    }
    Ok(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn kib_fields_are_found_by_exact_name() {
        let status = "Name:\tgateway\nVmHWM:\t  9000 kB\nVmRSS:\t  4321 kB\n";
        assert_eq!(field_kib(status, "VmRSS"), Some(4321));
        assert_eq!(field_kib(status, "VmHWM"), Some(9000));
        assert_eq!(field_kib(status, "Vm"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_us(me).is_ok());
        assert!(slab_kib().unwrap() > 0);
        assert!(rss_kib(u32::MAX).is_err());
    }
}
