//! On-demand resolution of workloads addressed by hostname (ztunnel's `resolve_on_demand_dns`):
//! a ServiceEntry with `resolution: DNS` gives istiod endpoints that have a hostname and no IP;
//! a connection routed to one waits here while the hostname is resolved, then is routed again
//! with the answer (`proxy::outbound`).
//!
//! Runs on one core: each core has its own [`OnDemand`] (its cache, its lookups in flight),
//! reached through [`for_core`]. `Rc`/`RefCell` only. (It hangs off a thread-local rather than
//! `CoreCtx` because `core` sits below `dns` in the module layers; a core is one thread, so the
//! thread-local is the core's.)
//!
//! Where the questions go: the upstream resolvers the DNS proxy forwards to
//! (`ZRING_DNS_UPSTREAMS`, else zring's own `/etc/resolv.conf`), each tried once in order, over
//! UDP from zring's own network namespace with the packet mark (so the capture rules let it
//! out), over TCP when the answer is truncated; each exchange bounded by
//! `ZRING_DNS_UPSTREAM_TIMEOUT_MS`. The name is asked as it is (a ServiceEntry host is fully
//! qualified; no search domains). The family asked first is the connection's destination's (A
//! for IPv4, AAAA for IPv6); when the name has no address of that family the other is asked, as
//! a workload with IPs of the other family only is still reached at one of them.
//!
//! Caching (`cache`): per core, the answer for its smallest TTL (clamped), failures briefly.
//! Connections asking for a name already being looked up wait for that lookup (one lookup per
//! name and family per core at a time); the lookup runs in a task of its own, so a connection
//! that goes away does not cancel it for the others. At most [`MAX_LOOKUPS`] names are looked
//! up at once per core; beyond, the connection is refused (`busy`). Every outcome is counted in
//! `zring_dns_on_demand_total{result}`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use monoio::net::udp::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use super::answer::{self, Addresses};
use super::cache::{self, Cache, Failure, Outcome};
use super::wire::{self, Name, Query, TYPE_A, TYPE_AAAA};
use super::{DnsError, upstream};
use crate::core::{CoreCtx, Shared};
use crate::latch::Latch;
use crate::metrics::dns::DnsShard;
use crate::sys::socket::SpoofSide;

/// Names looked up at once on one core, at most.
pub const MAX_LOOKUPS: usize = 256;

/// A lookup's name (canonical form) and whether the family wanted is IPv6.
type LookupKey = (String, bool);

/// One core's on-demand resolver.
#[derive(Debug)]
pub struct OnDemand {
    cache: RefCell<Cache>,
    /// Lookups running now, by (canonical hostname, family wanted); fired when done.
    inflight: RefCell<HashMap<LookupKey, Rc<Latch<()>>>>,
    upstreams: Vec<SocketAddr>,
    /// Per exchange with one upstream.
    timeout: Duration,
    mark: u32,
    metrics: DnsShard,
}

thread_local! {
    /// This core's resolver, with the `Shared` it was built for (a test may run several
    /// meshes' cores on one thread, one after the other).
    static CORE: RefCell<Option<(Weak<Shared>, Rc<OnDemand>)>> = const { RefCell::new(None) };
}

/// The resolver of the core running `ctx` (made on first use).
pub fn for_core(ctx: &CoreCtx) -> Rc<OnDemand> {
    CORE.with(|slot| {
        let mut slot = slot.borrow_mut();
        // The Weak keeps the allocation, so its address cannot be another `Shared`'s.
        if let Some((shared, od)) = &*slot
            && std::ptr::eq(shared.as_ptr(), Arc::as_ptr(&ctx.shared))
        {
            return od.clone();
        }
        let cfg = ctx.config();
        let od = Rc::new(OnDemand::new(
            super::upstream_list(&cfg.dns, ctx.id),
            cfg.dns.upstream_timeout,
            cfg.packet_mark,
            ctx.shared.metrics.dns().attach(),
        ));
        *slot = Some((Arc::downgrade(&ctx.shared), od.clone()));
        od
    })
}

impl OnDemand {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        mark: u32,
        metrics: DnsShard,
    ) -> OnDemand {
        OnDemand {
            cache: RefCell::default(),
            inflight: RefCell::default(),
            upstreams,
            timeout,
            mark,
            metrics,
        }
    }

    /// A cached address of `host` for a destination of family `v6` (one of several, picked by
    /// `random`); `None` when nothing live is cached or the cached outcome is a failure.
    pub fn cached(&self, host: &str, v6: bool, random: u64) -> Option<IpAddr> {
        let host = cache::canonical(host);
        let cache = self.cache.borrow();
        let addrs = cache.get(&host, v6, Instant::now())?.as_ref().ok()?;
        addrs.get((random % addrs.len() as u64) as usize).copied()
    }

    /// The outcome for `host` wanted in family `v6`: from the cache, or from a lookup (this
    /// connection's, or one already running for the name). Bounded in time by the lookup's own
    /// timeouts.
    pub async fn resolve(self: &Rc<Self>, host: &str, v6: bool, random: u64) -> Outcome {
        let host = cache::canonical(host);
        if let Some(outcome) = self.cache.borrow().get(&host, v6, Instant::now()) {
            self.metrics.on_demand(match outcome {
                Ok(_) => "hit",
                Err(_) => "negative_hit",
            });
            return outcome.clone();
        }
        let key = (host, v6);
        let running = self.inflight.borrow().get(&key).cloned();
        let done = match running {
            Some(done) => done,
            None => {
                if self.inflight.borrow().len() >= MAX_LOOKUPS {
                    self.metrics.on_demand(Failure::Busy.reason());
                    return Err(Failure::Busy);
                }
                let done = Rc::new(Latch::default());
                self.inflight.borrow_mut().insert(key.clone(), done.clone());
                let (me, key) = (self.clone(), key.clone());
                crate::task::spawn("dns_on_demand", async move {
                    let _end = LookupEnd { od: &me, key: &key };
                    let outcome = me.lookup(&key.0, key.1, random).await;
                    me.metrics.on_demand(match &outcome {
                        Ok(_) => "resolved",
                        Err(f) => f.reason(),
                    });
                    let ttl = match &outcome {
                        Ok((_, ttl)) => Some(*ttl),
                        Err(f) => f.ttl(),
                    };
                    if let Some(ttl) = ttl {
                        let outcome = outcome.map(|(addrs, _)| addrs);
                        debug!(host = %key.0, v6 = key.1, ?outcome, ?ttl, "on-demand DNS");
                        me.cache
                            .borrow_mut()
                            .insert(&key.0, key.1, outcome, ttl, Instant::now());
                    }
                });
                done
            }
        };
        done.wait().await;
        // Nothing cached after the lookup: it was refused (busy) or its task ended early.
        let cached = self.cache.borrow().get(&key.0, v6, Instant::now()).cloned();
        cached.unwrap_or(Err(Failure::Busy))
    }

    /// Looks `host` up in the family wanted, then the other when the name has none of it.
    async fn lookup(
        &self,
        host: &str,
        v6: bool,
        random: u64,
    ) -> Result<(Rc<[IpAddr]>, Duration), Failure> {
        let name = Name::from_dotted(host).ok_or(Failure::NxDomain)?;
        let (first, second) = if v6 {
            (TYPE_AAAA, TYPE_A)
        } else {
            (TYPE_A, TYPE_AAAA)
        };
        let (addrs, ttl) = match self.ask(&name, first, random).await {
            Err(Failure::NoData) => self.ask(&name, second, random.rotate_left(17)).await?,
            other => other?,
        };
        Ok((addrs.into(), cache::answer_ttl(ttl)))
    }

    /// Asks each upstream in turn until one answers: its addresses of `qtype` and their TTL.
    async fn ask(
        &self,
        name: &Name,
        qtype: u16,
        random: u64,
    ) -> Result<(Vec<IpAddr>, u32), Failure> {
        let mut last = Failure::NoUpstream;
        for (i, server) in self.upstreams.iter().enumerate() {
            let id = random.rotate_left(16 * i as u32) as u16;
            match self.exchange(*server, name, qtype, id).await {
                Ok(a) if a.rcode == 0 && !a.addrs.is_empty() => {
                    return Ok((a.addrs, a.ttl.unwrap_or(0)));
                }
                Ok(a) if a.rcode == 0 => return Err(Failure::NoData),
                Ok(a) if a.rcode == 3 => return Err(Failure::NxDomain),
                Ok(_) => last = Failure::Upstream,
                Err(f) => last = f,
            }
            debug!(%server, name = %name.display(), ?last, "on-demand DNS: upstream failed");
        }
        Err(last)
    }

    /// One question to one server: over UDP, again over TCP when the answer is truncated.
    async fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        qtype: u16,
        id: u16,
    ) -> Result<Addresses, Failure> {
        let msg = answer::query(id, name, qtype);
        let query = Query::parse(&msg).map_err(|_| Failure::Upstream)?;
        let reply = self.udp(server, &msg, &query).await?;
        let read =
            |reply: &[u8]| answer::addresses(reply, name, qtype).map_err(|_| Failure::Upstream);
        let a = read(&reply)?;
        if !a.truncated {
            return Ok(a);
        }
        let stream =
            crate::net::connect(server, None, SpoofSide::Outbound, self.mark, self.timeout)
                .await
                .map_err(|_| Failure::Upstream)?;
        let reply = upstream::forward_tcp(stream, server, &msg, &query, self.timeout)
            .await
            .map_err(failure)?;
        read(&reply)
    }

    /// Sends `msg` from a fresh marked socket and waits for the answer to it from `server`.
    async fn udp(&self, server: SocketAddr, msg: &[u8], query: &Query) -> Result<Vec<u8>, Failure> {
        let socket = self.udp_socket(server).map_err(|e| {
            debug!(%server, "on-demand DNS: cannot make a UDP socket: {e}");
            Failure::Upstream
        })?;
        let exchange = async {
            let (sent, _) = socket.send_to(msg.to_vec(), server).await;
            sent.map_err(|_| Failure::Upstream)?;
            let mut buf = vec![0u8; wire::MAX_UDP_SIZE];
            loop {
                buf.clear();
                let (res, back) = socket.recv_from(buf).await;
                buf = back;
                // An ICMP error (nothing listens there) ends this server's turn at once.
                let (n, from) = res.map_err(|_| Failure::Upstream)?;
                let reply = &buf[..n.min(buf.len())];
                if from == server && wire::answers(query, reply) {
                    return Ok(reply.to_vec());
                }
            }
        };
        monoio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    fn udp_socket(&self, server: SocketAddr) -> std::io::Result<UdpSocket> {
        let socket = Socket::new(
            Domain::for_address(server),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        socket.set_nonblocking(true)?;
        if self.mark != 0 {
            socket.set_mark(self.mark)?;
        }
        let any: SocketAddr = match server {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        socket.bind(&any.into())?;
        UdpSocket::from_std(socket.into())
    }

    /// Live cache entries (tests, debugging).
    pub fn cache_len(&self) -> usize {
        self.cache.borrow().len()
    }
}

fn failure(e: DnsError) -> Failure {
    match e {
        DnsError::Timeout(_) => Failure::Timeout,
        _ => Failure::Upstream,
    }
}

/// Ends a lookup whatever ends its task: forgets it and wakes its waiters.
struct LookupEnd<'a> {
    od: &'a OnDemand,
    key: &'a LookupKey,
}

impl Drop for LookupEnd<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.od.inflight.borrow_mut().remove(self.key) {
            done.fire(());
        }
    }
}

#[cfg(test)]
#[path = "ondemand_tests.rs"]
mod tests;
