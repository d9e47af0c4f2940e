//! Per-client limits of the DNS proxy, so one pod cannot take the forwarding capacity from the
//! others: a token bucket of queries per client IP (`ZRING_DNS_CLIENT_QPS`, 500 by default,
//! bursts of twice as many; 0: none), and a bound on the forwards and TCP connections one client holds at once
//! (a quarter of the core's `ZRING_DNS_MAX_INFLIGHT`). Beyond either, the query (or the TCP
//! connection) is dropped and counted (`zring_dns_rejected_total{reason="rate_limited"|
//! "client_inflight"}`); the client retries as it would after a lost packet.
//!
//! Pure: the clock comes in as an argument. Lives in one core's `CoreDns` (`RefCell`), so the
//! limits are per core: UDP from one client socket always lands on the same core
//! (SO_REUSEPORT hashes the 4-tuple), a client spreading over many source ports gets each
//! core's allowance.
//!
//! Bounds: at most [`MAX_CLIENTS`] clients are tracked per core. When the table is full, the
//! idle ones (a full bucket, nothing in flight) are forgotten; if none is idle, a new client is
//! refused as rate limited until one is (a flood from that many addresses at once is an attack
//! on the node, not one pod's burst).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Clients tracked per core.
pub const MAX_CLIENTS: usize = 4096;

/// Why a client's message is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Over its queries per second (or the table of clients is full).
    Rate,
    /// Holding its share of the core's forwards already.
    Inflight,
}

#[derive(Debug, Clone, Copy)]
struct Client {
    tokens: f64,
    last: Instant,
    inflight: usize,
}

#[derive(Debug)]
pub struct Limits {
    rate: f64,
    burst: f64,
    per_client_inflight: usize,
    capacity: usize,
    clients: HashMap<IpAddr, Client>,
}

impl Limits {
    /// Limits for a core that holds at most `max_inflight` forwards, letting each client send
    /// `qps` queries per second (bursts of twice as many; 0: no rate limit).
    pub fn for_core(max_inflight: usize, qps: u32) -> Limits {
        let rate = f64::from(qps);
        Limits::new(rate, 2.0 * rate, (max_inflight / 4).max(1), MAX_CLIENTS)
    }

    pub fn new(rate: f64, burst: f64, per_client_inflight: usize, capacity: usize) -> Limits {
        Limits {
            rate,
            burst,
            per_client_inflight,
            capacity: capacity.max(1),
            clients: HashMap::new(),
        }
    }

    /// The forwards one client may hold at once.
    pub fn per_client_inflight(&self) -> usize {
        self.per_client_inflight
    }

    /// Takes one query's token from `ip`'s bucket (with a rate of 0, every query passes).
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst);
        let c = self.client(ip, now).ok_or(Limited::Rate)?;
        let elapsed = now.saturating_duration_since(c.last).as_secs_f64();
        c.tokens = (c.tokens + elapsed * rate).min(burst);
        c.last = now;
        if c.tokens < 1.0 {
            return Err(Limited::Rate);
        }
        c.tokens -= 1.0;
        Ok(())
    }

    /// Takes one of `ip`'s forward slots; give it back with [`Limits::release`].
    pub fn hold(&mut self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        let bound = self.per_client_inflight;
        let c = self.client(ip, now).ok_or(Limited::Rate)?;
        if c.inflight >= bound {
            return Err(Limited::Inflight);
        }
        c.inflight += 1;
        Ok(())
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Some(c) = self.clients.get_mut(&ip) {
            c.inflight = c.inflight.saturating_sub(1);
        }
    }

    /// Forwards `ip` holds now.
    pub fn inflight(&self, ip: IpAddr) -> usize {
        self.clients.get(&ip).map_or(0, |c| c.inflight)
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// `ip`'s state, made (with a full bucket) if new and there is room.
    fn client(&mut self, ip: IpAddr, now: Instant) -> Option<&mut Client> {
        if !self.clients.contains_key(&ip) {
            if self.clients.len() >= self.capacity {
                let (rate, burst) = (self.rate, self.burst);
                self.clients.retain(|_, c| {
                    let refilled =
                        c.tokens + now.saturating_duration_since(c.last).as_secs_f64() * rate;
                    c.inflight > 0 || refilled < burst
                });
                if self.clients.len() >= self.capacity {
                    return None;
                }
            }
            self.clients.insert(
                ip,
                Client {
                    tokens: self.burst,
                    last: now,
                    inflight: 0,
                },
            );
        }
        self.clients.get_mut(&ip)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 244, 1, last])
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut l = Limits::new(10.0, 20.0, 4, 16);
        for i in 0..20 {
            assert_eq!(l.take(ip(1), t0), Ok(()), "query {i} of the burst");
        }
        assert_eq!(l.take(ip(1), t0), Err(Limited::Rate));
        // Another client is not affected.
        assert_eq!(l.take(ip(2), t0), Ok(()));
        // 10 per second: after half a second, 5 more.
        let t1 = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(l.take(ip(1), t1), Ok(()));
        }
        assert_eq!(l.take(ip(1), t1), Err(Limited::Rate));
        // Quiet for long: the bucket is full again, never fuller.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert_eq!(l.take(ip(1), t2), Ok(()));
        }
        assert_eq!(l.take(ip(1), t2), Err(Limited::Rate));
    }

    #[test]
    fn a_rate_of_zero_limits_nothing() {
        let t0 = Instant::now();
        let mut l = Limits::for_core(64, 0);
        for _ in 0..100_000 {
            assert_eq!(l.take(ip(1), t0), Ok(()));
        }
        assert_eq!(l.clients(), 0, "no client tracked for the rate alone");
    }

    #[test]
    fn forwards_are_bounded_per_client() {
        let t0 = Instant::now();
        let mut l = Limits::for_core(64, 500);
        assert_eq!(l.per_client_inflight(), 16);
        for _ in 0..16 {
            assert_eq!(l.hold(ip(1), t0), Ok(()));
        }
        assert_eq!(l.hold(ip(1), t0), Err(Limited::Inflight));
        assert_eq!(
            l.hold(ip(2), t0),
            Ok(()),
            "another client has its own share"
        );
        l.release(ip(1));
        assert_eq!(l.inflight(ip(1)), 15);
        assert_eq!(l.hold(ip(1), t0), Ok(()));
        // A release for a client never seen is harmless.
        l.release(ip(99));
        assert_eq!(Limits::for_core(1, 500).per_client_inflight(), 1);
    }

    #[test]
    fn the_client_table_is_bounded_and_forgets_idle_clients() {
        let t0 = Instant::now();
        let mut l = Limits::new(10.0, 20.0, 4, 4);
        for i in 1..=4 {
            l.take(ip(i), t0).unwrap();
        }
        // Busy clients (a token spent just now, or a forward held) stay: no room.
        l.hold(ip(1), t0).unwrap();
        assert_eq!(l.take(ip(5), t0), Err(Limited::Rate));
        assert_eq!(l.clients(), 4);
        // A few seconds on, the buckets of 2..=4 are full again: they are forgotten, 1 stays.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(l.take(ip(5), t1), Ok(()));
        assert_eq!(l.clients(), 2);
        assert_eq!(l.inflight(ip(1)), 1);
    }
}
