//! What a worker measures, and how workers' measurements become one.
//!
//! Latencies go into HdrHistograms; a worker sends its histograms to the
//! parent in hdrhistogram's V2 serialisation (hex in a JSON line), and the
//! parent adds them, so percentiles are exact over every session of every
//! worker, not averages of per-worker percentiles.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest value any histogram records (one hour in µs); more saturates.
const HIGHEST: u64 = 3_600_000_000;

/// A latency histogram (3 significant figures) that serialises as hex of
/// hdrhistogram's V2 format.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Hist {
        Hist(Histogram::new_with_bounds(1, HIGHEST, 3).expect("static bounds are valid"))
    }
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.0.saturating_record(v.clamp(1, HIGHEST));
    }

    /// Adds `other` in: afterwards quantiles are those of both together.
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so addition cannot fail.
        self.0.add(&other.0).expect("histograms share bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Value at quantile `q` (0..=1), 0 when empty.
    pub fn q(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn max(&self) -> u64 {
        self.0.max()
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut buf)
            .map_err(|e| serde::ser::Error::custom(format!("hdrhistogram: {e:?}")))?;
        s.serialize_str(&hex::encode(buf))
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| serde::de::Error::custom(format!("hdrhistogram: {e:?}")))?;
        let mut out = Hist::default();
        out.0
            .add(&h)
            .map_err(|e| serde::de::Error::custom(format!("hdrhistogram: {e:?}")))?;
        Ok(out)
    }
}

/// A `u64 -> u64` map as a list of pairs: integer map keys do not survive
/// serde's internally tagged enums (the reports are tagged by `msg`).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u64, u64>, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(u64, u64)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, u64>, D::Error> {
        Ok(Vec::<(u64, u64)>::deserialize(d)?.into_iter().collect())
    }
}

/// Counters of one worker, or of all of them once merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Connects started (reconnects included).
    pub started: u64,
    /// LOGIN_ACKs received (re-logins included).
    pub logged_in: u64,
    /// Sessions now logged in.
    pub up: u64,
    /// Sessions that never logged in, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Logged-in sessions the server ended, by reason.
    pub lost: BTreeMap<String, u64>,
    pub hb_sent: u64,
    pub hb_acked: u64,
    pub goaways: u64,
    /// Logins after a GOAWAY (storm).
    pub relogins: u64,
    /// Chat: SENDs written.
    pub chat_sent: u64,
    /// Chat: SEND_ACK OK.
    pub chat_acked: u64,
    /// Chat: SEND_ACK and JOIN_ACK other than OK, by status.
    pub chat_errors: BTreeMap<String, u64>,
    /// Chat: JOIN_ACK OK.
    pub chat_joined: u64,
    /// Chat: PUSHes received on the session's own channel.
    pub chat_received: u64,
    /// Chat: ids received twice.
    pub chat_duplicates: u64,
    /// Chat: ids received after a higher one.
    pub chat_out_of_order: u64,
    /// Chat: ids skipped when a higher one arrived (some may come late).
    pub chat_gap_ids: u64,
    /// Chat, rooms mode: highest id seen per room (merged by max).
    #[serde(with = "pairs")]
    pub chat_room_high: BTreeMap<u64, u64>,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.started += o.started;
        self.logged_in += o.logged_in;
        self.up += o.up;
        for (k, v) in &o.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.lost {
            *self.lost.entry(k.clone()).or_default() += v;
        }
        self.hb_sent += o.hb_sent;
        self.hb_acked += o.hb_acked;
        self.goaways += o.goaways;
        self.relogins += o.relogins;
        self.chat_sent += o.chat_sent;
        self.chat_acked += o.chat_acked;
        for (k, v) in &o.chat_errors {
            *self.chat_errors.entry(k.clone()).or_default() += v;
        }
        self.chat_joined += o.chat_joined;
        self.chat_received += o.chat_received;
        self.chat_duplicates += o.chat_duplicates;
        self.chat_out_of_order += o.chat_out_of_order;
        self.chat_gap_ids += o.chat_gap_ids;
        for (room, high) in &o.chat_room_high {
            let h = self.chat_room_high.entry(*room).or_default();
            *h = (*h).max(*high);
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }
}

/// Everything a worker measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub counters: Counters,
    /// TCP connect start to connected, µs.
    pub connect_us: Hist,
    /// LOGIN written to LOGIN_ACK, µs.
    pub login_us: Hist,
    /// HEARTBEAT written to HEARTBEAT_ACK, µs.
    pub hb_rtt_us: Hist,
    /// GOAWAY `reconnect_after_ms` values received.
    pub goaway_after_ms: Hist,
    /// Storm: re-login time after the gateway was told to drain, ms.
    pub relogin_ms: Hist,
    /// Chat: send time (stamped in the body) to PUSH received, µs.
    pub chat_e2e_us: Hist,
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.counters.merge(&o.counters);
        self.connect_us.merge(&o.connect_us);
        self.login_us.merge(&o.login_us);
        self.hb_rtt_us.merge(&o.hb_rtt_us);
        self.goaway_after_ms.merge(&o.goaway_after_ms);
        self.relogin_ms.merge(&o.relogin_ms);
        self.chat_e2e_us.merge(&o.chat_e2e_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_quantiles_are_those_of_the_union() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        let mut all = Hist::default();
        for v in 1..=1000u64 {
            if v % 3 == 0 {
                a.record(v)
            } else {
                b.record(v * 7)
            }
            all.record(if v % 3 == 0 { v } else { v * 7 });
        }
        let mut m = Hist::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!(m.len(), 1000);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(m.q(q), all.q(q), "q={q}");
        }
    }

    #[test]
    fn stats_survive_a_json_line_round_trip_and_merge() {
        let mut s = Stats::default();
        s.counters.logged_in = 3;
        s.counters.up = 3;
        *s.counters
            .failed
            .entry("connect timeout".into())
            .or_default() += 2;
        for v in [100, 200, 30_000] {
            s.login_us.record(v);
        }
        s.hb_rtt_us.record(55);
        let line = serde_json::to_string(&s).unwrap();
        assert!(!line.contains('\n'));
        let back: Stats = serde_json::from_str(&line).unwrap();
        assert_eq!(back, s);

        let mut total = Stats::default();
        total.merge(&back);
        total.merge(&back);
        assert_eq!(total.counters.logged_in, 6);
        assert_eq!(total.counters.failed["connect timeout"], 4);
        assert_eq!(total.login_us.len(), 6);
        assert_eq!(total.login_us.q(1.0), s.login_us.q(1.0));
    }

    #[test]
    fn room_highs_merge_by_max_and_counts_by_sum() {
        let mut a = Counters::default();
        a.chat_room_high.insert(1, 10);
        a.chat_room_high.insert(2, 3);
        a.chat_received = 4;
        let mut b = Counters::default();
        b.chat_room_high.insert(1, 7);
        b.chat_room_high.insert(3, 1);
        b.chat_received = 5;
        a.merge(&b);
        assert_eq!(a.chat_room_high.get(&1), Some(&10));
        assert_eq!(a.chat_room_high.get(&2), Some(&3));
        assert_eq!(a.chat_room_high.get(&3), Some(&1));
        assert_eq!(a.chat_received, 9);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(serde_json::from_str::<Hist>("\"00ff\"").is_err());
        assert!(serde_json::from_str::<Hist>("\"zz\"").is_err());
    }
}
