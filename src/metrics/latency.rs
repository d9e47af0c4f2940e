//! Latency distributions: an hdrhistogram per core and kind, merged by the metrics server and
//! exposed as Prometheus histograms with fixed buckets.
//!
//! A core records into its own [`Latency`] (plain memory, no atomics) and hands a filled one
//! to the metrics server every flush interval (see `shard`); the server adds it into the
//! process-wide one. hdrhistogram keeps two significant digits from 1 µs to 60 s (slower
//! observations saturate at 60 s), so a value is placed in a bucket to within 1 %; the sum is
//! kept exactly beside it.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest value kept apart from the others, in microseconds.
const MAX_MICROS: u64 = 60_000_000;

/// Upper bounds of the exposed buckets, in seconds (as the `le` label spells them) and in
/// microseconds; `+Inf` follows them.
pub const BUCKETS: [(&str, u64); 16] = [
    ("0.0001", 100),
    ("0.00025", 250),
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
];

/// What a latency measures; one histogram per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// From accept to the upstream being connected (HBONE stream open, or TCP connected).
    SetupOutbound,
    SetupInbound,
    /// An HBONE connection's TCP + TLS + HTTP/2 handshakes, as the client dialing a peer.
    HandshakeClient,
    /// An HBONE connection's TLS handshake, as the 15008 server.
    HandshakeServer,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::SetupOutbound,
        Kind::SetupInbound,
        Kind::HandshakeClient,
        Kind::HandshakeServer,
    ];

    pub fn index(self) -> usize {
        match self {
            Kind::SetupOutbound => 0,
            Kind::SetupInbound => 1,
            Kind::HandshakeClient => 2,
            Kind::HandshakeServer => 3,
        }
    }
}

/// One latency distribution.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    /// Exact sum of everything recorded, in microseconds.
    sum_micros: u64,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 2)
                .expect("constant bounds are valid for hdrhistogram"),
            sum_micros: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    pub fn add(&mut self, other: &Latency) {
        // Both sides were built with the same bounds, so adding cannot fail for range reasons;
        // a count overflow would need 2^64 observations.
        let _ = self.hist.add(&other.hist);
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }

    /// Moves everything recorded out, leaving this one empty.
    pub fn take(&mut self) -> Latency {
        let fresh = Latency {
            hist: Histogram::new_from(&self.hist),
            sum_micros: 0,
        };
        std::mem::replace(self, fresh)
    }

    /// Cumulative counts for each of [`BUCKETS`] (the `+Inf` bucket is [`Latency::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        BUCKETS.iter().map(|&(le, bound)| {
            let n = if bound >= MAX_MICROS {
                self.count()
            } else {
                self.hist.count_between(0, bound)
            };
            (le, n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_exact() {
        let mut l = Latency::new();
        for micros in [50, 100, 300, 900, 1_000, 40_000, 3_000_000, 90_000_000] {
            l.record(Duration::from_micros(micros));
        }
        assert_eq!(l.count(), 8);
        let c: Vec<(&str, u64)> = l.cumulative().collect();
        let at = |le: &str| c.iter().find(|(l, _)| *l == le).unwrap().1;
        assert_eq!(at("0.0001"), 2, "50 µs and 100 µs");
        assert_eq!(at("0.0005"), 3);
        assert_eq!(at("0.001"), 5);
        assert_eq!(at("0.05"), 6);
        assert_eq!(at("5"), 7);
        assert_eq!(at("10"), 7, "90 s is beyond every finite bucket");
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1), "{c:?}");
        let sum = 50 + 100 + 300 + 900 + 1_000 + 40_000 + 3_000_000 + 90_000_000u64;
        assert_eq!(l.sum_seconds(), sum as f64 / 1e6);
    }

    #[test]
    fn take_and_add_move_counts() {
        let mut core = Latency::new();
        core.record(Duration::from_millis(2));
        core.record(Duration::from_millis(3));
        let batch = core.take();
        assert!(core.is_empty());
        let mut merged = Latency::new();
        merged.add(&batch);
        merged.add(&batch);
        assert_eq!(merged.count(), 4);
        assert_eq!(merged.sum_seconds(), 0.010);
    }
}
