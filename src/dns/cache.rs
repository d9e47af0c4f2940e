//! The per-core cache of zring's own lookups (`ondemand`): hostname and address family → the
//! addresses (kept for the answer's TTL) or the failure (kept briefly). Pure: the clock comes in
//! as an argument, so the tests move time by hand. Lives in one core's `RefCell`.
//!
//! Bounds: at most `capacity` entries; inserting into a full cache first drops what has expired,
//! then the entry closest to expiring (an O(n) scan, only when full). TTLs are clamped: at least
//! [`MIN_TTL`] (a TTL of 0 would send every connection to the resolver), at most [`MAX_TTL`] (a
//! name that moves is seen again within that); failures stay [`NEGATIVE_TTL`] (NXDOMAIN, no
//! address) or [`FAILURE_TTL`] (timeouts, server errors: soon worth another try, but a burst of
//! connections meanwhile is refused at once instead of each waiting out a timeout).

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Shortest time an answer is kept.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest time an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long "no such name" or "no address" is kept.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long a failed lookup (timeout, SERVFAIL, no upstream) is kept.
pub const FAILURE_TTL: Duration = Duration::from_secs(1);
/// Entries per core, by default.
pub const CAPACITY: usize = 4096;

/// Why a name has no address. The `reason` is the metric label and the access log's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no such name (NXDOMAIN)")]
    NxDomain,
    #[error("the name has no address")]
    NoData,
    #[error("no upstream resolver answered in time")]
    Timeout,
    #[error("the upstream resolvers failed (SERVFAIL, REFUSED, or an unreadable answer)")]
    Upstream,
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("too many lookups in flight on this core")]
    Busy,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Failure::NxDomain => "nxdomain",
            Failure::NoData => "no_data",
            Failure::Timeout => "timeout",
            Failure::Upstream => "upstream_error",
            Failure::NoUpstream => "no_upstream",
            Failure::Busy => "busy",
        }
    }

    /// How long this failure is remembered (`None`: not at all, it says nothing of the name).
    pub fn ttl(self) -> Option<Duration> {
        match self {
            Failure::NxDomain | Failure::NoData => Some(NEGATIVE_TTL),
            Failure::Timeout | Failure::Upstream | Failure::NoUpstream => Some(FAILURE_TTL),
            Failure::Busy => None,
        }
    }
}

/// A cached outcome: the addresses (never empty) or why there are none.
pub type Outcome = Result<Rc<[IpAddr]>, Failure>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: Box<str>,
    v6: bool,
}

#[derive(Debug)]
struct Entry {
    outcome: Outcome,
    expires: Instant,
}

#[derive(Debug)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::new(CAPACITY)
    }
}

/// The canonical form of a hostname: lowercase, no trailing dot.
pub fn canonical(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// How long an answer with this record TTL (seconds) is kept.
pub fn answer_ttl(record_ttl: u32) -> Duration {
    Duration::from_secs(u64::from(record_ttl)).clamp(MIN_TTL, MAX_TTL)
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The live outcome for `host` (canonical form) wanted in family `v6`, if any.
    pub fn get(&self, host: &str, v6: bool, now: Instant) -> Option<&Outcome> {
        let key = Key {
            host: host.into(),
            v6,
        };
        self.entries
            .get(&key)
            .filter(|e| e.expires > now)
            .map(|e| &e.outcome)
    }

    /// Keeps `outcome` for `host` (canonical form) in family `v6` for `ttl` from `now`.
    pub fn insert(&mut self, host: &str, v6: bool, outcome: Outcome, ttl: Duration, now: Instant) {
        let key = Key {
            host: host.into(),
            v6,
        };
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                outcome,
                expires: now + ttl,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Outcome {
        Ok(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn answers_live_for_their_ttl_per_family() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        c.insert(
            "db.example.com",
            false,
            ips(&["192.0.2.1"]),
            answer_ttl(30),
            t0,
        );
        assert_eq!(
            c.get("db.example.com", false, t0 + Duration::from_secs(29)),
            Some(&ips(&["192.0.2.1"]))
        );
        assert_eq!(c.get("db.example.com", true, t0), None, "the other family");
        assert_eq!(
            c.get("db.example.com", false, t0 + Duration::from_secs(30)),
            None
        );
    }

    #[test]
    fn ttls_are_clamped() {
        assert_eq!(answer_ttl(0), MIN_TTL);
        assert_eq!(answer_ttl(45), Duration::from_secs(45));
        assert_eq!(answer_ttl(u32::MAX), MAX_TTL);
    }

    #[test]
    fn failures_are_kept_briefly_or_not_at_all() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let nx = Failure::NxDomain;
        c.insert("gone.example.com", false, Err(nx), nx.ttl().unwrap(), t0);
        let just_before = t0 + NEGATIVE_TTL - Duration::from_millis(1);
        assert_eq!(
            c.get("gone.example.com", false, just_before),
            Some(&Err(nx))
        );
        assert_eq!(c.get("gone.example.com", false, t0 + NEGATIVE_TTL), None);
        assert_eq!(Failure::Timeout.ttl(), Some(FAILURE_TTL));
        assert!(FAILURE_TTL <= NEGATIVE_TTL && NEGATIVE_TTL < Duration::from_secs(60));
        assert_eq!(Failure::Busy.ttl(), None);
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_the_soonest_to_expire() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        let s = Duration::from_secs;
        c.insert("a", false, ips(&["192.0.2.1"]), s(10), t0);
        c.insert("b", false, ips(&["192.0.2.2"]), s(100), t0);
        c.insert("c", false, ips(&["192.0.2.3"]), s(50), t0);
        // Full: "a" expires first and goes.
        c.insert("d", false, ips(&["192.0.2.4"]), s(70), t0);
        assert_eq!(c.len(), 3);
        assert!(c.get("a", false, t0).is_none());
        for h in ["b", "c", "d"] {
            assert!(c.get(h, false, t0).is_some(), "{h}");
        }
        // Later, "c" (and nothing else) has expired: it goes, the others stay.
        let t1 = t0 + s(60);
        c.insert("e", false, ips(&["192.0.2.5"]), s(5), t1);
        assert_eq!(c.len(), 3);
        for h in ["b", "d", "e"] {
            assert!(c.get(h, false, t1).is_some(), "{h}");
        }
        // Replacing an existing key never evicts another.
        c.insert("b", false, ips(&["192.0.2.9"]), s(5), t1);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b", false, t1), Some(&ips(&["192.0.2.9"])));
    }

    #[test]
    fn a_flood_of_names_stays_within_the_bound() {
        let t0 = Instant::now();
        let mut c = Cache::new(64);
        for i in 0..10_000u32 {
            c.insert(
                &format!("n{i}.example.com"),
                i % 2 == 0,
                Err(Failure::NxDomain),
                NEGATIVE_TTL,
                t0,
            );
            assert!(c.len() <= 64);
        }
    }

    #[test]
    fn hostnames_are_compared_in_canonical_form() {
        assert_eq!(canonical("DB.Example.COM."), "db.example.com");
        assert_eq!(canonical("db.example.com"), "db.example.com");
    }
}
