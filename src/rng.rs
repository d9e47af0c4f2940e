//! The crate's one pseudo-random generator: xorshift64 (Marsaglia's 13/7/17 triple). Fast,
//! a few instructions, no state beyond one word, so each core or each user keeps its own and
//! nothing is shared or locked. Used for load balancing (`CoreCtx::random`), spoofed source
//! ports (`sys::socket`) and backoff jitter (`backoff`).
//!
//! Not for anything security related: the output is predictable from one value.
//!
//! A leaf: imports nothing from the crate. Pure apart from [`Rng::from_clock`].

/// A xorshift64 generator. `Copy`, so a core can keep it in a `Cell`; a copy repeats the
/// original's sequence, so copy only to store it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed` (the same seed gives the same sequence). The lowest bit
    /// is set because xorshift's state must never be zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A generator seeded from the wall clock and the process id, so that processes started
    /// together still differ (for jitter that should spread, not repeat).
    pub fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// The next value of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`0` when `n` is 0). Modulo bias is below 2^-40 for the small ranges
    /// the crate draws from.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_never_stuck_at_zero() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let seq: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        assert!(seq.iter().all(|&x| x == b.next_u64()));
        // Zero is xorshift's fixed point; the seed is forced odd so it is never reached.
        let mut z = Rng::new(0);
        assert!((0..1000).all(|_| z.next_u64() != 0));
        let distinct: std::collections::HashSet<_> = seq.iter().collect();
        assert_eq!(distinct.len(), seq.len());
    }

    #[test]
    fn the_sequence_is_xorshift64_13_7_17() {
        // From state 1: 1 ^ 1 << 13 = 0x2001; ^ 0x2001 >> 7 = 0x2041; ^ 0x2041 << 17 =
        // 0x4082_2041. Pinned, so that a change of shift triple (another sequence) is noticed.
        let mut r = Rng::new(1);
        assert_eq!(r.next_u64(), 0x4082_2041);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(42);
        assert_eq!(r.below(0), 0);
        for n in [1, 2, 3, 10, 1000, u64::MAX] {
            assert!((0..100).all(|_| r.below(n) < n));
        }
        // Every value of a small range comes up.
        let seen: std::collections::HashSet<_> = (0..200).map(|_| r.below(5)).collect();
        assert_eq!(seen.len(), 5);
    }
}
