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
//! `ZRING_DNS_UPSTREAM_TIMEOUT_MS`.
//!
//! Which names are asked: as ztunnel (hickory built from the proxy's own resolv.conf), a
//! hostname that is not fully qualified goes through the `search` domains and `ndots` of
//! `ZRING_DNS_RESOLV_CONF` (see `search` for the order and the rules); the first name with an
//! address wins. A name that does not exist (NXDOMAIN), has no address (NODATA) or gets SERVFAIL moves
//! on to the next name; a timeout or no upstream at all ends the lookup there (glibc's
//! `res_search` stops on a timeout too; hickory would go on, waiting a full timeout per name).
//! When every name failed the outcome is NODATA if one of them existed, else SERVFAIL if one
//! got it, else NXDOMAIN.
//!
//! The family asked first is the connection's destination's (A for IPv4, AAAA for IPv6); when
//! the name has no address of that family the other is asked, as a workload with IPs of the
//! other family only is still reached at one of them. With `IPV6_ENABLED=false` only A is
//! asked, whatever the destination (ztunnel's `Ipv4Only` lookup strategy then).
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
use super::search::SearchList;
use super::wire::{self, Name, Query, TYPE_A, TYPE_AAAA};
use super::{DnsError, upstream};
use crate::core::{CoreCtx, Shared};
use crate::latch::Latch;
use crate::metrics::dns::DnsShard;
use crate::sys::socket::SpoofSide;

/// Names looked up at once on one core, at most.
pub const MAX_LOOKUPS: usize = 256;

/// A lookup's name (`OnDemand::key`) and whether the family wanted is IPv6.
type LookupKey = (String, bool);

/// One core's on-demand resolver.
#[derive(Debug)]
pub struct OnDemand {
    cache: RefCell<Cache>,
    /// Lookups running now, by (hostname key, family wanted); fired when done.
    inflight: RefCell<HashMap<LookupKey, Rc<Latch<()>>>>,
    upstreams: Vec<SocketAddr>,
    /// Per exchange with one upstream.
    timeout: Duration,
    mark: u32,
    metrics: DnsShard,
    /// How a hostname that is not fully qualified is expanded (zring's resolv.conf).
    search: SearchList,
    /// `IPV6_ENABLED`: off, only A is asked.
    ipv6: bool,
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
        let od = Rc::new(
            OnDemand::new(
                super::upstream_list(&cfg.dns, ctx.id),
                cfg.dns.upstream_timeout,
                cfg.packet_mark,
                ctx.shared.metrics.dns().attach(),
            )
            .with_search(search_list(&cfg.dns.resolv_conf))
            .with_ipv6(cfg.ipv6_enabled),
        );
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
            search: SearchList::default(),
            ipv6: true,
        }
    }

    /// The same resolver expanding names with `search` (default: none, every name asked as
    /// it is).
    pub fn with_search(self, search: SearchList) -> OnDemand {
        OnDemand { search, ..self }
    }

    /// The same resolver asking AAAA too (`true`, the default) or A only.
    pub fn with_ipv6(self, ipv6: bool) -> OnDemand {
        OnDemand { ipv6, ..self }
    }

    /// A cached address of `host` for a destination of family `v6` (one of several, picked by
    /// `random`); `None` when nothing live is cached or the cached outcome is a failure.
    pub fn cached(&self, host: &str, v6: bool, random: u64) -> Option<IpAddr> {
        let host = self.key(host);
        let cache = self.cache.borrow();
        let addrs = cache.get(&host, v6, Instant::now())?.as_ref().ok()?;
        addrs.get((random % addrs.len() as u64) as usize).copied()
    }

    /// The outcome for `host` wanted in family `v6`: from the cache, or from a lookup (this
    /// connection's, or one already running for the name). Bounded in time by the lookup's own
    /// timeouts.
    pub async fn resolve(self: &Rc<Self>, host: &str, v6: bool, random: u64) -> Outcome {
        let host = self.key(host);
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

    /// Looks `host` up under each name of the search list in turn (see the module doc).
    async fn lookup(
        &self,
        host: &str,
        v6: bool,
        random: u64,
    ) -> Result<(Rc<[IpAddr]>, Duration), Failure> {
        let mut outcome = Failure::NxDomain;
        for (i, candidate) in self.search.candidates(host).iter().enumerate() {
            // A search domain can make a valid host too long: that name does not exist.
            let Some(name) = Name::from_dotted(candidate) else {
                continue;
            };
            let random = random.rotate_left(7 * i as u32);
            match self.lookup_name(&name, v6, random).await {
                Ok((addrs, ttl)) => return Ok((addrs.into(), cache::answer_ttl(ttl))),
                Err(f @ (Failure::NoData | Failure::Upstream | Failure::NxDomain)) => {
                    outcome = most_telling(outcome, f);
                    debug!(host, name = %candidate, ?f, "on-demand DNS: trying the next name");
                }
                Err(f) => return Err(f),
            }
        }
        Err(outcome)
    }

    /// One name: the family wanted, then the other when the name has none of it (and IPv6 is
    /// on); A only when IPv6 is off.
    async fn lookup_name(
        &self,
        name: &Name,
        v6: bool,
        random: u64,
    ) -> Result<(Vec<IpAddr>, u32), Failure> {
        if !self.ipv6 {
            return self.ask(name, TYPE_A, random).await;
        }
        let (first, second) = if v6 {
            (TYPE_AAAA, TYPE_A)
        } else {
            (TYPE_A, TYPE_AAAA)
        };
        match self.ask(name, first, random).await {
            Err(Failure::NoData) => self.ask(name, second, random.rotate_left(17)).await,
            other => other,
        }
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

    /// The name under which `host` is cached and looked up: its canonical form
    /// (`cache::canonical`), with the trailing dot kept when there are search domains, since
    /// `db.` and `db` are then different lookups (one asked alone, one expanded).
    fn key(&self, host: &str) -> String {
        let name = cache::canonical(host);
        if host.ends_with('.') && !self.search.domains().is_empty() {
            name + "."
        } else {
            name
        }
    }

    /// Live cache entries (tests, debugging).
    pub fn cache_len(&self) -> usize {
        self.cache.borrow().len()
    }
}

/// Of two failures of a lookup's names, the one to report: a name that exists without
/// addresses says most, then an upstream error, then a name that does not exist.
fn most_telling(a: Failure, b: Failure) -> Failure {
    let rank = |f: Failure| match f {
        Failure::NoData => 2,
        Failure::Upstream => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The search list of the resolv.conf at `path`; none when it cannot be read (the upstreams
/// come from the same file, and their absence is logged by `upstream_list`).
pub fn search_list(path: &std::path::Path) -> SearchList {
    std::fs::read_to_string(path)
        .map(|text| SearchList::parse(&text))
        .unwrap_or_default()
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
