//! Services: ztunnel's local `Service` YAML shape (`RawService` and its parts) and its
//! conversion into a `state::Service`, plus `add_endpoints`, which joins a service's own
//! `endpoints` to the workloads they name. Pure; runs on the control thread (or whichever thread
//! calls `parse`). Invariant: what zring cannot honour (`weightedWaypoints`,
//! `visibility: Namespace`) is refused by name, never ignored. Headless services (`vips: []`)
//! and CIDR VIPs (`cidrVips: [{network: "", cidr: 10.1.0.0/16}]`) are kept, as from istiod.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::budget::{Entries, List, Str, Text};
use super::workload::Memberships;
use super::{LocalConfigError, RawGateway, gateway, invalid, port_map};
use crate::state::{
    Cidr, HealthStatus, IpFamily, LoadBalancer, LoadBalancerHealthPolicy, LoadBalancerMode,
    LoadBalancerScope, NamespacedHostname, NetworkAddress, NetworkCidr, PortMap, Service, Workload,
    excerpt,
};

/// A service's own `endpoints` (as in ztunnel's config dump) join the workloads they name, as
/// if that workload listed the service. As in ztunnel, the workload's own `services` entry wins
/// over the service's, an endpoint naming no workload routes nowhere, and an endpoint's health
/// is its workload's `status`.
pub(super) fn add_endpoints(
    workloads: &mut [(Workload, Memberships)],
    by_uid: &HashMap<Arc<str>, usize>,
    key: NamespacedHostname,
    endpoints: Vec<(Arc<str>, PortMap)>,
) {
    for (uid, ports) in endpoints {
        let Some(&i) = by_uid.get(&uid) else { continue };
        let memberships = &mut workloads[i].1;
        if !memberships.iter().any(|(k, _)| *k == key) {
            memberships.push((key.clone(), ports));
        }
    }
}

type Endpoints = Vec<(Arc<str>, PortMap)>;

pub(super) fn service(s: RawService) -> Result<(Service, Endpoints), LocalConfigError> {
    let subject = &format!(
        "service {}",
        excerpt(&format!("{}/{}", s.namespace.0, s.hostname.0))
    );
    // ztunnel reads these; zring cannot honour them yet, and ignoring them would route
    // differently from ztunnel, so they are refused by name.
    if !s.weighted_waypoints.0.is_empty() {
        let why = "are not supported by zring (name one waypoint)".to_owned();
        return Err(invalid(subject, "weightedWaypoints", why));
    }
    if s.visibility != RawVisibility::Public {
        let why = "Namespace is not supported by zring (only Public)".to_owned();
        return Err(invalid(subject, "visibility", why));
    }
    let mut endpoints = Vec::with_capacity(s.endpoints.0.len());
    for (key, ep) in s.endpoints.0 {
        if key.0 != ep.workload_uid.0 {
            let why = format!(
                "key {} differs from its workloadUid {}",
                excerpt(&key.0),
                excerpt(&ep.workload_uid.0)
            );
            return Err(invalid(subject, "endpoints", why));
        }
        endpoints.push((key.0.into(), port_map(subject, "endpoints", ep.port)?));
    }
    let mut vips = Vec::with_capacity(s.vips.0.len());
    for vip in &s.vips.0 {
        let Some(addr) = NetworkAddress::parse(&vip.0) else {
            let why = format!(
                "{} is not \"network/IP\" (the default network is empty: \"/10.96.0.1\")",
                excerpt(&vip.0)
            );
            return Err(invalid(subject, "vips", why));
        };
        vips.push(addr);
    }
    let mut cidr_vips = Vec::with_capacity(s.cidr_vips.0.len());
    for c in s.cidr_vips.0 {
        let cidr = Cidr::parse(&c.cidr.0).map_err(|e| {
            let why = format!(
                "{} is not a network (\"10.1.0.0/16\"): {e}",
                excerpt(&c.cidr.0)
            );
            invalid(subject, "cidrVips", why)
        })?;
        cidr_vips.push(NetworkCidr {
            network: c.network.0.into(),
            cidr,
        });
    }
    let service = Service {
        name: s.name.0.into(),
        namespace: s.namespace.0.into(),
        hostname: s.hostname.0.into(),
        vips,
        cidr_vips,
        ports: port_map(subject, "ports", s.ports)?,
        subject_alt_names: s
            .subject_alt_names
            .0
            .into_iter()
            .map(|t| t.0.into())
            .collect(),
        waypoint: s
            .waypoint
            .map(|g| gateway(subject, "waypoint", g))
            .transpose()?,
        load_balancer: s.load_balancer.map(|lb| LoadBalancer {
            routing_preferences: lb.routing_preferences.0,
            mode: lb.mode,
            health_policy: lb.health_policy,
        }),
        ip_families: s.ip_families,
        canonical: s.canonical,
        endpoints: Vec::new(), // derived from the workloads by the builder
    };
    Ok((service, endpoints))
}

// ---- raw YAML shapes: ztunnel's spellings, required where ztunnel requires them ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawService {
    name: Text,
    namespace: Text,
    hostname: Text,
    vips: List<Text>,
    #[serde(default)]
    cidr_vips: List<RawNetworkCidr>,
    ports: Entries<u16, u16>,
    /// Keyed by workload UID, as ztunnel's config dump writes them.
    #[serde(default)]
    endpoints: Entries<Text, RawEndpoint>,
    #[serde(default)]
    subject_alt_names: List<Text>,
    #[serde(default)]
    waypoint: Option<RawGateway>,
    #[serde(default)]
    weighted_waypoints: List<RawWeightedWaypoint>,
    #[serde(default)]
    load_balancer: Option<RawLoadBalancer>,
    #[serde(default)]
    ip_families: Option<IpFamily>,
    #[serde(default)]
    canonical: bool,
    #[serde(default)]
    visibility: RawVisibility,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetworkCidr {
    /// Empty for the default network, as in `vips` (required, as in ztunnel).
    network: Str,
    cidr: Text,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEndpoint {
    workload_uid: Text,
    port: Entries<u16, u16>,
    #[allow(
        dead_code,
        reason = "zring takes an endpoint's health from its workload"
    )]
    status: HealthStatus,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeightedWaypoint {
    #[allow(
        dead_code,
        reason = "read only to check the shape; weighted waypoints are refused"
    )]
    destination: RawGateway,
    #[allow(
        dead_code,
        reason = "read only to check the shape; weighted waypoints are refused"
    )]
    weight: u32,
}

#[derive(Default, PartialEq, Deserialize)]
enum RawVisibility {
    #[default]
    Public,
    Namespace,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLoadBalancer {
    routing_preferences: List<LoadBalancerScope>,
    mode: LoadBalancerMode,
    health_policy: LoadBalancerHealthPolicy,
}
