//! The outbound routing decision: where a captured connection goes. Pure: no IO, no clock;
//! randomness comes in as an argument so tests are deterministic.
//!
//! Order (ARCHITECTURE.md, "Data path"): zring itself → deny; unknown source → deny; service
//! VIP (single or CIDR) → its waypoint, else for a `PASSTHROUGH` service the original
//! destination, else an endpoint (`balance`: health policy, locality preferences, capacity);
//! workload → its waypoint; same node → direct local; HBONE workload → tunnel to
//! `<ip>:15008`; TCP workload → direct; unknown address → passthrough; and the resolved address
//! is zring itself → deny.
//!
//! Lookups are network-aware, as ztunnel's: the source is the workload at its IP on this node
//! (a node proxy's sources are its own pods, whatever else claims the IP elsewhere), and the
//! destination is looked up on the source's network, a service VIP preferring the source's
//! namespace when several services share it.
//!
//! An endpoint addressed by hostname is resolved through the [`Resolve`] hook, which answers
//! only from what is at hand (the core's DNS cache, `dns::ondemand`); without an answer the
//! route is [`Unroutable::Unresolved`], and the caller (`proxy::outbound`) resolves the name
//! asynchronously and routes again (with the same random input, so the same endpoint is
//! chosen); a name that does not resolve is [`Denied::DnsFailed`]
//! (`response_flags="DNS_FAILED"`).
//!
//! A waypoint whose workload is addressed by hostname is resolved the same way, through the
//! same hook and the same second routing, with the same flag when its name does not resolve.
//!
//! What the snapshot keeps but zring cannot route yet is refused here, per connection, with
//! [`Denied::Unroutable`] (`response_flags="UNROUTABLE"`): an endpoint on another network
//! reachable only through its network gateway (and, for a caller without a resolver,
//! [`NoResolver`], an endpoint addressed by hostname).
//!
//! "zring itself" ([`OwnAddrs`]) is one of zring's ports on an address where zring listens:
//! loopback and, in node mode, this node's own addresses (zring's six ports); in in-pod mode,
//! the pod's own addresses (the three proxy ports zring opens inside the pod). The same port
//! numbers anywhere else are ordinary traffic: another node's metrics (15020), a waypoint's or
//! a gateway's HBONE port (15008). It is judged on the requested address first (as ztunnel
//! refuses loopback) and again on the address the route resolved to, so a service port that
//! maps to an endpoint's 15008 is judged on the endpoint.

mod balance;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use balance::Choice;

use crate::state::{Destination, GatewayAddress, Protocol, Service, Snapshot, Workload};

/// Port of the HBONE listener on every node.
pub const HBONE_PORT: u16 = 15008;

/// How the connection leaves this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The destination is not in the mesh: connect to it as asked.
    Passthrough(SocketAddr),
    /// A workload that speaks plain TCP, on another node.
    Direct(SocketAddr),
    /// A workload on this node: connect straight to it (authorization still applies).
    DirectLocal(SocketAddr),
    /// An HBONE tunnel: mTLS + HTTP/2 CONNECT to `via`, asking for `authority`.
    Hbone {
        via: SocketAddr,
        authority: SocketAddr,
        kind: TunnelKind,
        /// The workload expected to answer at `via`: its identity is the one to verify.
        peer: Arc<Workload>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    ToServer,
    ToServerWaypoint,
}

impl Action {
    /// The `type` word of the access log (`proxy to … type ToServerWaypoint`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Passthrough(_) => "Passthrough",
            Action::Direct(_) => "Direct",
            Action::DirectLocal(_) => "DirectLocal",
            Action::Hbone {
                kind: TunnelKind::ToServer,
                ..
            } => "ToServer",
            Action::Hbone {
                kind: TunnelKind::ToServerWaypoint,
                ..
            } => "ToServerWaypoint",
        }
    }
}

/// A routing decision, with what the access log and metrics need to know.
#[derive(Debug, Clone)]
pub struct Route {
    pub source: Arc<Workload>,
    pub dst_workload: Option<Arc<Workload>>,
    pub dst_service: Option<Arc<Service>>,
    pub action: Action,
    /// How the service's endpoint was chosen (`None`: no endpoint was chosen: a workload
    /// address, a waypoint, a passthrough), for the debug log.
    pub choice: Option<Choice>,
}

/// Resolves the hostname of a workload addressed by DNS (a ServiceEntry with DNS resolution)
/// without blocking: an answer already at hand (a DNS cache), or `None`, and the route is
/// [`Unroutable::Unresolved`] (the caller may resolve it and route again). `want_v6`: the
/// family of the connection's destination.
pub trait Resolve {
    fn resolve(&self, hostname: &str, want_v6: bool) -> Option<IpAddr>;
}

/// Resolves nothing (tests, and callers with no DNS at hand).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl Resolve for NoResolver {
    fn resolve(&self, _: &str, _: bool) -> Option<IpAddr> {
        None
    }
}

/// What the snapshot holds but zring cannot route (yet): refused per connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("workload {workload} is addressed by hostname {hostname}, which has no address yet")]
    Unresolved {
        workload: Arc<str>,
        hostname: Arc<str>,
    },
    #[error(
        "workload {workload} is on network {network}, reachable only through its network \
         gateway, which zring does not tunnel through"
    )]
    NetworkGateway {
        workload: Arc<str>,
        network: Arc<str>,
    },
    #[error("workload {0} has no address, hostname or network gateway")]
    NoAddress(Arc<str>),
}

pub use crate::net::own::{OwnAddrs, POD_PORTS};

/// `Err` when `addr` is zring itself.
fn not_own(own: &OwnAddrs, addr: SocketAddr) -> Result<(), Denied> {
    if own.contains(addr) {
        return Err(Denied::OwnPort(addr));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("destination {0} is zring itself (one of its own ports on one of its addresses)")]
    OwnPort(SocketAddr),
    #[error("unknown source workload {0}")]
    UnknownSource(IpAddr),
    #[error("service {service} has no port {port}")]
    NoServicePort { service: Arc<str>, port: u16 },
    #[error("service {0} has no healthy endpoint")]
    NoHealthyEndpoint(Arc<str>),
    #[error("waypoint {0} cannot be resolved")]
    UnresolvedWaypoint(String),
    #[error("unroutable: {0}")]
    Unroutable(Unroutable),
    #[error(
        "workload {workload} is addressed by hostname {hostname}, which did not resolve: {reason}"
    )]
    DnsFailed {
        workload: Arc<str>,
        hostname: Arc<str>,
        reason: crate::dns::cache::Failure,
    },
}

/// Decides where a connection from `src` (a pod on node `node`) to `dst` goes. `own` says
/// where zring itself listens: a connection that would reach it is denied, judged on `dst` and
/// on the address the route resolved to. `resolver` answers for endpoints addressed by
/// hostname.
pub fn outbound(
    snapshot: &Snapshot,
    node: &str,
    own: &OwnAddrs,
    src: IpAddr,
    dst: SocketAddr,
    random: u64,
    resolver: &dyn Resolve,
) -> Result<Route, Denied> {
    not_own(own, dst)?;
    let source = snapshot
        .workload_near(node, src)
        .cloned()
        .ok_or(Denied::UnknownSource(src))?;
    outbound_from(snapshot, node, own, source, dst, random, resolver)
}

/// [`outbound`] from a known source workload (in a pod: the pod's own, whatever else the
/// snapshot maps its IP to).
pub fn outbound_from(
    snapshot: &Snapshot,
    node: &str,
    own: &OwnAddrs,
    source: Arc<Workload>,
    dst: SocketAddr,
    random: u64,
    resolver: &dyn Resolve,
) -> Result<Route, Denied> {
    not_own(own, dst)?;
    let route = resolve(snapshot, node, source, dst, random, resolver)?;
    match &route.action {
        Action::Passthrough(to) | Action::Direct(to) | Action::DirectLocal(to) => {
            not_own(own, *to)?
        }
        Action::Hbone { via, authority, .. } => {
            not_own(own, *via)?;
            not_own(own, *authority)?;
        }
    }
    Ok(route)
}

/// The routing decision proper, before the resolved address is judged.
fn resolve(
    snapshot: &Snapshot,
    node: &str,
    source: Arc<Workload>,
    dst: SocketAddr,
    random: u64,
    resolver: &dyn Resolve,
) -> Result<Route, Denied> {
    let network = &*source.network;

    if let Some(service) = snapshot.service_for(network, dst.ip(), Some(&source.namespace)) {
        let service = service.clone();
        let route = |dst_workload, action, choice| Route {
            source: source.clone(),
            dst_workload,
            dst_service: Some(service.clone()),
            action,
            choice,
        };
        if let Some(wp) = &service.waypoint
            && let Some(action) = via_waypoint(snapshot, wp, &source, dst, random, resolver)?
        {
            return Ok(route(None, action, None));
        }
        if service.is_passthrough() {
            return Ok(route(None, Action::Passthrough(dst), None));
        }
        let (endpoint, port, choice) = pick_endpoint(&service, &source, dst.port(), random)?;
        let action = to_workload(node, &source, &endpoint, None, port, dst, resolver)?;
        return Ok(route(Some(endpoint), action, Some(choice)));
    }

    if let Some(workload) = snapshot.workload_by_addr(network, dst.ip()) {
        let workload = workload.clone();
        let route = |action| Route {
            source: source.clone(),
            dst_workload: Some(workload.clone()),
            dst_service: None,
            action,
            choice: None,
        };
        if let Some(wp) = &workload.waypoint
            && let Some(action) = via_waypoint(snapshot, wp, &source, dst, random, resolver)?
        {
            return Ok(route(action));
        }
        let action = to_workload(
            node,
            &source,
            &workload,
            Some(dst.ip()),
            dst.port(),
            dst,
            resolver,
        )?;
        return Ok(route(action));
    }

    Ok(Route {
        source,
        dst_workload: None,
        dst_service: None,
        action: Action::Passthrough(dst),
        choice: None,
    })
}

/// The way to reach `workload` on `port`, given where it runs and what it speaks. `at`: the
/// address it was reached at, when reached by its own IP; else one of its IPs of `dst`'s family
/// (the first when it has none of that family), or its hostname resolved.
fn to_workload(
    node: &str,
    source: &Workload,
    workload: &Arc<Workload>,
    at: Option<IpAddr>,
    port: u16,
    dst: SocketAddr,
    resolver: &dyn Resolve,
) -> Result<Action, Denied> {
    if balance::behind_gateway(source, workload) {
        return Err(Denied::Unroutable(Unroutable::NetworkGateway {
            workload: workload.uid.clone(),
            network: workload.network.clone(),
        }));
    }
    let want_v6 = dst.is_ipv6();
    let ip = match at {
        Some(ip) => ip,
        None => match workload
            .workload_ips
            .iter()
            .find(|ip| ip.is_ipv6() == want_v6)
            .or(workload.workload_ips.first())
        {
            Some(ip) => *ip,
            None if !workload.hostname.is_empty() => resolver
                .resolve(&workload.hostname, want_v6)
                .ok_or_else(|| {
                    Denied::Unroutable(Unroutable::Unresolved {
                        workload: workload.uid.clone(),
                        hostname: workload.hostname.clone(),
                    })
                })?,
            None => {
                return Err(Denied::Unroutable(Unroutable::NoAddress(
                    workload.uid.clone(),
                )));
            }
        },
    };
    let target = SocketAddr::new(ip, port);
    if !workload.node.is_empty() && *workload.node == *node {
        return Ok(Action::DirectLocal(target));
    }
    Ok(match workload.protocol {
        Protocol::Hbone => Action::Hbone {
            via: SocketAddr::new(ip, HBONE_PORT),
            authority: target,
            kind: TunnelKind::ToServer,
            peer: workload.clone(),
        },
        Protocol::Tcp => Action::Direct(target),
    })
}

/// Resolves a waypoint to the workload that will receive the tunnel. `None` when the source is
/// the waypoint itself: its own traffic must not loop back into it.
///
/// The address dialled, as ztunnel picks it: a waypoint named by address is reached at that
/// address when it is one of the waypoint workload's own, else at the workload's IP of that
/// address's family; a waypoint named by hostname at the workload's IP of the connection's
/// family (either way its first IP when it has none of the family). A waypoint workload
/// addressed by hostname (no IP) has that hostname resolved like any endpoint's (`resolver`,
/// then [`Unroutable::Unresolved`] for the caller to resolve it and route again, `DnsFailed`
/// when it does not resolve). Its name is resolved for the connection's family, as the caller's lookup
/// asks: where ztunnel would ask in the family of a waypoint VIP, the two differ only for a
/// dual-stack connection crossing families to a waypoint known only by hostname.
fn via_waypoint(
    snapshot: &Snapshot,
    wp: &GatewayAddress,
    source: &Arc<Workload>,
    authority: SocketAddr,
    random: u64,
    resolver: &dyn Resolve,
) -> Result<Option<Action>, Denied> {
    let (peer, named_at) = match &wp.destination {
        Destination::Address(addr) => {
            let peer = if let Some(svc) = snapshot.service_for(&addr.network, addr.address, None) {
                balance::choose(svc, source, random).map(|(e, _)| e.workload.clone())
            } else {
                snapshot
                    .workload_by_addr(&addr.network, addr.address)
                    .cloned()
            };
            (peer, Some(addr.address))
        }
        Destination::Hostname(h) => (
            snapshot
                .service_by_host(&h.namespace, &h.hostname)
                .and_then(|svc| balance::choose(svc, source, random))
                .map(|(e, _)| e.workload.clone()),
            None,
        ),
    };
    let Some(peer) = peer else {
        return Err(Denied::UnresolvedWaypoint(wp.to_string()));
    };
    if peer.uid == source.uid {
        return Ok(None);
    }
    // The family preferred: the waypoint address's, else the connection's.
    let prefer_v6 = named_at.map_or(authority.is_ipv6(), |ip| ip.is_ipv6());
    let ip = match named_at.filter(|ip| peer.workload_ips.contains(ip)) {
        Some(ip) => ip,
        None => match peer
            .workload_ips
            .iter()
            .find(|ip| ip.is_ipv6() == prefer_v6)
            .or(peer.workload_ips.first())
        {
            Some(ip) => *ip,
            None if !peer.hostname.is_empty() => resolver
                .resolve(&peer.hostname, authority.is_ipv6())
                .ok_or_else(|| {
                    Denied::Unroutable(Unroutable::Unresolved {
                        workload: peer.uid.clone(),
                        hostname: peer.hostname.clone(),
                    })
                })?,
            None => return Err(Denied::UnresolvedWaypoint(wp.to_string())),
        },
    };
    let via = SocketAddr::new(ip, wp.hbone_mtls_port);
    Ok(Some(Action::Hbone {
        via,
        authority,
        kind: TunnelKind::ToServerWaypoint,
        peer,
    }))
}

/// Picks an endpoint of `service` for `port` (see `balance`), and the port to dial on it.
fn pick_endpoint(
    service: &Service,
    source: &Workload,
    port: u16,
    random: u64,
) -> Result<(Arc<Workload>, u16, Choice), Denied> {
    if service.target_port(port).is_none() {
        return Err(Denied::NoServicePort {
            service: service.hostname.clone(),
            port,
        });
    }
    let Some((e, choice)) = balance::choose(service, source, random) else {
        if let Some(e) = balance::gateway_only(service, source) {
            return Err(Denied::Unroutable(Unroutable::NetworkGateway {
                workload: e.workload.uid.clone(),
                network: e.workload.network.clone(),
            }));
        }
        return Err(Denied::NoHealthyEndpoint(service.hostname.clone()));
    };
    Ok((e.workload.clone(), e.target_port(service, port), choice))
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelKind::ToServer => "ToServer",
            TunnelKind::ToServerWaypoint => "ToServerWaypoint",
        })
    }
}

#[cfg(test)]
mod tests;
