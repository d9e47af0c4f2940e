//! The DNS proxy on 15053 (ztunnel's, issue 16): pods' DNS, redirected here by the capture
//! rules, is answered from the mesh's snapshot for the names the mesh knows (services, their
//! Kubernetes short forms, ServiceEntry hosts and wildcards, headless services, StatefulSet
//! pods) and forwarded to the upstream resolvers for everything else.
//!
//! Threads: it runs on the cores like the TCP listeners, never on the control thread. Each
//! core binds its own UDP and TCP sockets on the port (SO_REUSEPORT): in node mode once, in the
//! node's netns (the node's capture rule redirects enrolled pods' DNS there), in-pod mode once
//! per enrolled pod, inside the pod's netns (istio-cni's rules redirect the pod's DNS to it).
//! Everything per core (the metrics shard, the count of forwards in flight, the upstream
//! sockets) is `Rc`/`Cell`; the only shared inputs are the snapshot and the config.
//!
//! Who asks decides the answer (the client's namespace expands short names, its network picks
//! VIPs): in node mode the client is the workload owning the query's source IP, in-pod the pod
//! whose netns the socket is in. A client the snapshot does not know yet is forwarded (ztunnel
//! answers SERVFAIL): the pod still resolves through its cluster DNS.
//!
//! Modules: `wire` (the message codec, pure), `resolve` (what the mesh answers, pure),
//! `upstream` (forwarding), `server` (the per-core UDP and TCP loops), `limit` (per-client
//! rate and forward bounds, pure), `answer` (queries and answers of zring's own lookups, pure),
//! `cache`, `search` and `ondemand` (resolving workloads addressed by hostname for routing).

pub mod answer;
pub mod cache;
#[doc(hidden)]
pub mod fuzz;
pub mod limit;
pub mod ondemand;
pub mod resolve;
pub mod search;
pub mod server;
pub mod upstream;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::Config;
use crate::core::CoreCtx;
use crate::metrics::dns::{DnsShard, Dropped};

pub use resolve::{Lookup, Settings};
pub use server::{Origin, serve_tcp, serve_udp};
pub use upstream::UdpUpstream;

/// What can go wrong forwarding one query; the client then gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("upstream {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("upstream {0}: {1}")]
    Upstream(SocketAddr, std::io::Error),
    #[error("upstream {0} answered something else than the question")]
    BadAnswer(SocketAddr),
    #[error("too many queries in flight")]
    Busy,
    #[error("cannot connect to upstream: {0}")]
    Connect(#[from] crate::net::Error),
}

/// One core's DNS proxy state, shared by every DNS socket the core serves.
#[derive(Debug)]
pub struct CoreDns {
    pub metrics: DnsShard,
    pub settings: Settings,
    /// Tried in order, each once per query.
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// Forwards (and TCP connections) this core holds at once, at most.
    pub max_inflight: usize,
    inflight: Cell<usize>,
    /// Per-client rate and forward bounds (`limit`).
    limits: RefCell<limit::Limits>,
}

impl CoreDns {
    /// The core's DNS state from `config`: the upstreams are `ZRING_DNS_UPSTREAMS` or the
    /// nameservers of the resolv.conf (read now; a missing file leaves none, and every
    /// forwarded query gets SERVFAIL, logged once per core).
    pub fn new(ctx: &CoreCtx) -> CoreDns {
        CoreDns::with_config(ctx.config(), ctx.shared.metrics.dns().attach(), ctx.id)
    }

    pub fn with_config(config: &Config, metrics: DnsShard, core: usize) -> CoreDns {
        let d = &config.dns;
        let upstreams = upstream_list(d, core);
        if core == 0 {
            info!(upstreams = ?upstreams, domain = %d.domain, "DNS proxy upstreams");
        }
        CoreDns {
            metrics,
            settings: Settings {
                domain: d.domain.clone(),
                preferred_namespace: d.preferred_namespace.clone(),
                ipv6: config.ipv6_enabled,
            },
            upstreams,
            upstream_timeout: d.upstream_timeout,
            max_inflight: d.max_inflight,
            inflight: Cell::new(0),
            limits: RefCell::new(limit::Limits::for_core(d.max_inflight, d.client_qps)),
        }
    }

    /// Takes one query's token from `client`'s bucket; `Err` (counted) when it is over its rate.
    pub fn allow(&self, client: IpAddr) -> Result<(), Dropped> {
        match self.limits.borrow_mut().take(client, Instant::now()) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.metrics.dropped(Dropped::RateLimited);
                Err(Dropped::RateLimited)
            }
        }
    }

    /// Takes a slot for a forward or a TCP connection of `client`; `Err` (counted) when the
    /// core is at its bound (`overload`) or the client at its share (`client_inflight`).
    pub fn admit(self: &Rc<Self>, client: IpAddr) -> Result<InflightGuard, Dropped> {
        let n = self.inflight.get();
        let why = if n >= self.max_inflight {
            Some(Dropped::Overload)
        } else {
            match self.limits.borrow_mut().hold(client, Instant::now()) {
                Ok(()) => None,
                Err(limit::Limited::Inflight) => Some(Dropped::ClientInflight),
                Err(limit::Limited::Rate) => Some(Dropped::RateLimited),
            }
        };
        if let Some(why) = why {
            self.metrics.dropped(why);
            return Err(why);
        }
        self.inflight.set(n + 1);
        Ok(InflightGuard(self.clone(), client))
    }

    /// Forwards and TCP connections held now.
    pub fn inflight(&self) -> usize {
        self.inflight.get()
    }
}

/// The upstream resolvers of `d`: `ZRING_DNS_UPSTREAMS`, else the nameservers of the
/// resolv.conf (read now; a missing file leaves none, logged).
pub fn upstream_list(d: &crate::config::DnsConfig, core: usize) -> Vec<SocketAddr> {
    match &d.upstreams {
        Some(list) => list.clone(),
        None => match std::fs::read_to_string(&d.resolv_conf) {
            Ok(text) => upstream::nameservers(&text),
            Err(e) => {
                warn!(core, path = %d.resolv_conf.display(), "DNS: no upstream resolvers: {e}");
                Vec::new()
            }
        },
    }
}

/// See [`CoreDns::admit`].
#[derive(Debug)]
pub struct InflightGuard(Rc<CoreDns>, IpAddr);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get() - 1);
        self.0.limits.borrow_mut().release(self.1);
    }
}

/// The `request_query_type` label of a type: lowercase name, `unknown` for types outside
/// this list (so a flood of random types cannot grow the series without bound).
pub fn query_type_name(qtype: u16) -> &'static str {
    match qtype {
        1 => "a",
        2 => "ns",
        5 => "cname",
        6 => "soa",
        12 => "ptr",
        13 => "hinfo",
        15 => "mx",
        16 => "txt",
        28 => "aaaa",
        33 => "srv",
        35 => "naptr",
        43 => "ds",
        46 => "rrsig",
        48 => "dnskey",
        64 => "svcb",
        65 => "https",
        99 => "spf",
        252 => "axfr",
        255 => "any",
        257 => "caa",
        _ => "unknown",
    }
}
