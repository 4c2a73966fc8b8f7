//! The adaptive heartbeat policy of PROTOCOL.md rule 5, sans-io.
//!
//! The starting interval depends on the client's network type. After each
//! heartbeat the interval may adapt from the two most recent observed
//! intervals between heartbeats, `iv1` (older) and `iv2` (newer):
//! `next = k × (iv1 + iv2) / 2`, with `k = shrink` (0.8) when `iv1 > iv2`
//! and `grow` (1.2) otherwise, clamped to `[min_ms, max_ms]`. The login
//! counts as the start of the first interval, so the first adaptation
//! happens at the second heartbeat. The idle timeout follows the interval
//! (`idle_factor` × interval) unless a fixed one is configured.

use proto::pb::NetworkType;
use serde::{Deserialize, Serialize};

/// Heartbeat settings. Every field has the default shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatPolicy {
    /// Starting interval for WIRED clients. Default 10,000 ms.
    pub wired_ms: u32,
    /// Starting interval for WIFI clients. Default 30,000 ms.
    pub wifi_ms: u32,
    /// Starting interval for CELL_5G and CELL_4G clients. Default 90,000 ms.
    pub cell_4g_5g_ms: u32,
    /// Starting interval for CELL_3G clients. Default 90,000 ms.
    pub cell_3g_ms: u32,
    /// Starting interval for CELL_2G clients. Default 240,000 ms.
    pub cell_2g_ms: u32,
    /// Starting interval for NETWORK_UNKNOWN (and unlisted values).
    /// Default 30,000 ms.
    pub unknown_ms: u32,
    /// Adapt the interval after each heartbeat (rule 5). Default true.
    pub adaptive: bool,
    /// Lower clamp of an adapted interval. Default 5,000 ms.
    pub min_ms: u32,
    /// Upper clamp of an adapted interval. Default 300,000 ms.
    pub max_ms: u32,
    /// Factor applied when the older interval was the longer. Default 0.8.
    pub shrink: f32,
    /// Factor applied otherwise. Default 1.2.
    pub grow: f32,
    /// Idle timeout as a multiple of the current interval. Default 3.
    pub idle_factor: u32,
    /// A fixed idle timeout instead of `idle_factor` × interval.
    /// Default none.
    pub idle_timeout_ms: Option<u32>,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            wired_ms: 10_000,
            wifi_ms: 30_000,
            cell_4g_5g_ms: 90_000,
            cell_3g_ms: 90_000,
            cell_2g_ms: 240_000,
            unknown_ms: 30_000,
            adaptive: true,
            min_ms: 5_000,
            max_ms: 300_000,
            shrink: 0.8,
            grow: 1.2,
            idle_factor: 3,
            idle_timeout_ms: None,
        }
    }
}

impl HeartbeatPolicy {
    /// Sets every network type's starting interval to `ms`.
    pub fn set_all_starting(&mut self, ms: u32) {
        self.wired_ms = ms;
        self.wifi_ms = ms;
        self.cell_4g_5g_ms = ms;
        self.cell_3g_ms = ms;
        self.cell_2g_ms = ms;
        self.unknown_ms = ms;
    }

    /// The starting interval for a `Login.network` value.
    pub fn starting_ms(&self, network: i32) -> u32 {
        match NetworkType::try_from(network) {
            Ok(NetworkType::Wired) => self.wired_ms,
            Ok(NetworkType::Wifi) => self.wifi_ms,
            Ok(NetworkType::Cell5g | NetworkType::Cell4g) => self.cell_4g_5g_ms,
            Ok(NetworkType::Cell3g) => self.cell_3g_ms,
            Ok(NetworkType::Cell2g) => self.cell_2g_ms,
            Ok(NetworkType::NetworkUnknown) | Err(_) => self.unknown_ms,
        }
    }

    /// The idle timeout that goes with interval `hb_ms`.
    pub fn idle_ms(&self, hb_ms: u32) -> u32 {
        self.idle_timeout_ms
            .unwrap_or_else(|| hb_ms.saturating_mul(self.idle_factor))
    }

    /// The next interval from the older and newer observed intervals, or
    /// `current` when adaptation is off.
    pub fn next_ms(&self, current: u32, iv1: u32, iv2: u32) -> u32 {
        if !self.adaptive {
            return current;
        }
        let k = if iv1 > iv2 { self.shrink } else { self.grow };
        let mean = (f64::from(iv1) + f64::from(iv2)) / 2.0;
        let next = (f64::from(k) * mean).round();
        // Float-to-int `as` saturates; the clamp bounds it anyway.
        (next as u32).clamp(self.min_ms, self.max_ms.max(self.min_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_intervals_follow_the_network() {
        let p = HeartbeatPolicy::default();
        assert_eq!(p.starting_ms(NetworkType::Wired as i32), 10_000);
        assert_eq!(p.starting_ms(NetworkType::Wifi as i32), 30_000);
        assert_eq!(p.starting_ms(NetworkType::Cell5g as i32), 90_000);
        assert_eq!(p.starting_ms(NetworkType::Cell4g as i32), 90_000);
        assert_eq!(p.starting_ms(NetworkType::Cell3g as i32), 90_000);
        assert_eq!(p.starting_ms(NetworkType::Cell2g as i32), 240_000);
        assert_eq!(p.starting_ms(NetworkType::NetworkUnknown as i32), 30_000);
        assert_eq!(p.starting_ms(99), 30_000);
    }

    #[test]
    fn grows_when_steady_and_shrinks_when_the_older_was_longer() {
        let p = HeartbeatPolicy::default();
        assert_eq!(p.next_ms(30_000, 30_000, 30_000), 36_000);
        assert_eq!(p.next_ms(30_000, 20_000, 30_000), 30_000); // 1.2 × 25 s
        assert_eq!(p.next_ms(30_000, 30_000, 20_000), 20_000); // 0.8 × 25 s
    }

    #[test]
    fn clamps_to_the_bounds() {
        let p = HeartbeatPolicy::default();
        assert_eq!(p.next_ms(30_000, 1_000, 1_000), 5_000);
        assert_eq!(p.next_ms(30_000, 290_000, 290_000), 300_000);
    }

    #[test]
    fn fixed_when_not_adaptive() {
        let p = HeartbeatPolicy {
            adaptive: false,
            ..HeartbeatPolicy::default()
        };
        assert_eq!(p.next_ms(12_345, 1_000, 90_000), 12_345);
    }

    #[test]
    fn idle_timeout_follows_the_interval_unless_fixed() {
        let mut p = HeartbeatPolicy::default();
        assert_eq!(p.idle_ms(10_000), 30_000);
        p.idle_timeout_ms = Some(7_000);
        assert_eq!(p.idle_ms(10_000), 7_000);
    }
}
