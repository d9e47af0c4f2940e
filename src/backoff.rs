//! Jittered exponential backoff for the control thread's reconnects and retries (xDS stream,
//! CA requests). Pure: the caller sleeps itself; the jitter comes from `rng::Rng`, seeded from
//! the clock or, in tests, by the caller.
//!
//! Each delay doubles from `min` up to `max`; the delay handed out is drawn uniformly from its
//! upper half ("equal jitter"), so many proxies restarted together spread their reconnects
//! while none retries much sooner than the schedule says.

use std::time::Duration;

use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The un-jittered delay the next `next()` is drawn from.
    current: Duration,
    /// Draws the jitter.
    rng: Rng,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff::with_rng(min, max, Rng::from_clock())
    }

    /// A backoff whose jitter repeats for a given `seed` (for tests).
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff::with_rng(min, max, Rng::new(seed))
    }

    fn with_rng(min: Duration, max: Duration, rng: Rng) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: min,
            rng,
        }
    }

    /// The delay before the next attempt; doubles the schedule for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        let span = (base - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.rng.below(span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::with_seed(Duration::from_millis(10), Duration::from_secs(15), 7);
        let mut base = Duration::from_millis(10);
        let mut delays = Vec::new();
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
            delays.push(d);
            base = (base * 2).min(Duration::from_secs(15));
        }
        assert!(delays.last().unwrap() >= &Duration::from_millis(7500));
        // Jitter: not every delay sits on the same point of its range.
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
