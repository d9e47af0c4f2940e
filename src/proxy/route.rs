//! The outbound routing decision: where a captured connection goes. Pure: no IO, no clock;
//! randomness comes in as an argument so tests are deterministic.
//!
//! Order (ARCHITECTURE.md, "Data path"): zring itself → deny; unknown source → deny; service
//! VIP → its waypoint, else a healthy endpoint (weighted by capacity); workload → its waypoint;
//! same node → direct local; HBONE workload → tunnel to `<ip>:15008`; TCP workload → direct;
//! unknown address → passthrough; and the resolved address is zring itself → deny.
//!
//! "zring itself" ([`OwnAddrs`]) is one of zring's ports on an address where zring listens:
//! loopback and, in node mode, this node's own addresses (zring's six ports); in in-pod mode,
//! the pod's own addresses (the three proxy ports zring opens inside the pod). The same port
//! numbers anywhere else are ordinary traffic: another node's metrics (15020), a waypoint's or
//! a gateway's HBONE port (15008). It is judged on the requested address first (as ztunnel
//! refuses loopback) and again on the address the route resolved to, so a service port that
//! maps to an endpoint's 15008 is judged on the endpoint.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::state::{Destination, Endpoint, GatewayAddress, Protocol, Service, Snapshot, Workload};

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
}

/// Decides where a connection from `src` (a pod on node `node`) to `dst` goes. `own` says
/// where zring itself listens: a connection that would reach it is denied, judged on `dst` and
/// on the address the route resolved to.
pub fn outbound(
    snapshot: &Snapshot,
    node: &str,
    own: &OwnAddrs,
    src: IpAddr,
    dst: SocketAddr,
    random: u64,
) -> Result<Route, Denied> {
    not_own(own, dst)?;
    let route = resolve(snapshot, node, src, dst, random)?;
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
    src: IpAddr,
    dst: SocketAddr,
    random: u64,
) -> Result<Route, Denied> {
    let source = snapshot
        .workload_by_ip(src)
        .cloned()
        .ok_or(Denied::UnknownSource(src))?;

    if let Some(service) = snapshot.service_by_vip(dst.ip()) {
        let service = service.clone();
        if let Some(wp) = &service.waypoint
            && let Some(action) = via_waypoint(snapshot, wp, &source, dst, random)?
        {
            return Ok(Route {
                source,
                dst_workload: None,
                dst_service: Some(service),
                action,
            });
        }
        let (endpoint, port) = pick_endpoint(&service, dst.port(), random)?;
        let action = to_workload(node, &endpoint, port);
        return Ok(Route {
            source,
            dst_workload: Some(endpoint),
            dst_service: Some(service),
            action,
        });
    }

    if let Some(workload) = snapshot.workload_by_ip(dst.ip()) {
        let workload = workload.clone();
        if let Some(wp) = &workload.waypoint
            && let Some(action) = via_waypoint(snapshot, wp, &source, dst, random)?
        {
            return Ok(Route {
                source,
                dst_workload: Some(workload),
                dst_service: None,
                action,
            });
        }
        let action = to_workload(node, &workload, dst.port());
        return Ok(Route {
            source,
            dst_workload: Some(workload),
            dst_service: None,
            action,
        });
    }

    Ok(Route {
        source,
        dst_workload: None,
        dst_service: None,
        action: Action::Passthrough(dst),
    })
}

/// The way to reach `workload` on `port`, given where it runs and what it speaks.
fn to_workload(node: &str, workload: &Arc<Workload>, port: u16) -> Action {
    // `workload_ips` is never empty: the snapshot rejects such workloads.
    let ip = workload.workload_ips[0];
    let target = SocketAddr::new(ip, port);
    if !workload.node.is_empty() && *workload.node == *node {
        return Action::DirectLocal(target);
    }
    match workload.protocol {
        Protocol::Hbone => Action::Hbone {
            via: SocketAddr::new(ip, HBONE_PORT),
            authority: target,
            kind: TunnelKind::ToServer,
            peer: workload.clone(),
        },
        Protocol::Tcp => Action::Direct(target),
    }
}

/// Resolves a waypoint to the workload that will receive the tunnel. `None` when the source is
/// the waypoint itself: its own traffic must not loop back into it.
fn via_waypoint(
    snapshot: &Snapshot,
    wp: &GatewayAddress,
    source: &Arc<Workload>,
    authority: SocketAddr,
    random: u64,
) -> Result<Option<Action>, Denied> {
    let peer = match &wp.destination {
        Destination::Address(addr) => {
            if let Some(svc) = snapshot.service_by_vip(addr.address) {
                pick(svc, random).map(|e| e.workload.clone())
            } else {
                snapshot.workload_by_ip(addr.address).cloned()
            }
        }
        Destination::Hostname(h) => snapshot
            .service_by_host(&h.namespace, &h.hostname)
            .and_then(|svc| pick(svc, random))
            .map(|e| e.workload.clone()),
    };
    let Some(peer) = peer else {
        return Err(Denied::UnresolvedWaypoint(wp.to_string()));
    };
    if peer.uid == source.uid {
        return Ok(None);
    }
    let via = SocketAddr::new(peer.workload_ips[0], wp.hbone_mtls_port);
    Ok(Some(Action::Hbone {
        via,
        authority,
        kind: TunnelKind::ToServerWaypoint,
        peer,
    }))
}

/// Picks an endpoint of `service` for `port`, and the port to dial on it.
fn pick_endpoint(
    service: &Service,
    port: u16,
    random: u64,
) -> Result<(Arc<Workload>, u16), Denied> {
    if service.target_port(port).is_none() {
        return Err(Denied::NoServicePort {
            service: service.hostname.clone(),
            port,
        });
    }
    let e =
        pick(service, random).ok_or_else(|| Denied::NoHealthyEndpoint(service.hostname.clone()))?;
    Ok((e.workload.clone(), e.target_port(service, port)))
}

/// An endpoint the service admits (healthy, or any under the `AllowAll` health policy),
/// weighted by capacity.
fn pick(service: &Service, random: u64) -> Option<&Endpoint> {
    let eligible = || {
        service
            .endpoints
            .iter()
            .filter(|e| service.admits(e.workload.status) && !e.workload.workload_ips.is_empty())
    };
    let weight = |e: &Endpoint| u64::from(e.workload.capacity.max(1));
    let total: u64 = eligible().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = random % total;
    eligible().find(|e| {
        let hit = ticket < weight(e);
        ticket = ticket.saturating_sub(weight(e));
        hit
    })
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
