//! `Service`: a set of workloads behind VIPs and a hostname, with its port mapping, its
//! endpoints and how to balance over them. Pure data, built on the control thread and read
//! through `Arc` by every core.
//!
//! Invariants once inside a `Snapshot` (enforced by `SnapshotBuilder::build`): the
//! `namespace/hostname` key is unique across services, `vips` is canonical, no service port is
//! 0, and `endpoints` lists exactly the workloads whose memberships name this service, in the
//! order the workloads were added, healthy or not (routing filters by health with
//! `Service::admits`).
//!
//! What istiod sends is kept as it is: a service may have no VIP at all (headless: reached by
//! its endpoints' own IPs, or by DNS), share a VIP with services of other namespaces (the
//! snapshot picks one per client, see `Snapshot::service_for`), and answer on whole ranges
//! (`cidr_vips`, a ServiceEntry's `addresses: [10.1.0.0/16]`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::ser;
use super::workload::{GatewayAddress, HealthStatus, NamespacedHostname, NetworkAddress, Workload};

/// Service port → target port. A target of 0 on a service means "the endpoint's own mapping
/// decides" (istiod sends 0 for named target ports); endpoint mappings never hold 0.
pub type PortMap = BTreeMap<u16, u16>;

/// One workload behind a service, with its own port mapping for that service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub workload: Arc<Workload>,
    pub ports: PortMap,
}

impl Endpoint {
    /// The port to dial on this endpoint for `service_port`: its own mapping first, then the
    /// service's non-zero target, then the service port itself.
    pub fn target_port(&self, service: &Service, service_port: u16) -> u16 {
        self.ports
            .get(&service_port)
            .or_else(|| service.ports.get(&service_port))
            .copied()
            .filter(|p| *p != 0)
            .unwrap_or(service_port)
    }
}

// ztunnel's dump shape for an endpoint: the uid, the port map and the health.
impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct View<'a> {
            workload_uid: &'a str,
            port: &'a PortMap,
            status: HealthStatus,
        }
        View {
            workload_uid: &self.workload.uid,
            port: &self.ports,
            status: self.workload.status,
        }
        .serialize(s)
    }
}

/// How strictly locality (or node, cluster, network) preferences bind endpoint selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerMode {
    /// Ignore the routing preferences.
    #[default]
    Standard,
    /// Only endpoints matching every preference; none → fail.
    Strict,
    /// Prefer endpoints matching the preferences, fall back to the others.
    Failover,
    /// No endpoint selection: send to the original destination.
    Passthrough,
}

/// A dimension endpoints can be matched on, in priority order within `routing_preferences`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerScope {
    Region,
    Zone,
    Subzone,
    Node,
    Cluster,
    Network,
}

/// Which endpoints may receive traffic by health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerHealthPolicy {
    #[default]
    OnlyHealthy,
    AllowAll,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub routing_preferences: Vec<LoadBalancerScope>,
    pub mode: LoadBalancerMode,
    pub health_policy: LoadBalancerHealthPolicy,
}

/// A range of VIPs on a named network: a service answering on every address of `cidr`.
/// Serialized as ztunnel dumps it: `{"network": "", "cidr": "10.1.0.0/16"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NetworkCidr {
    #[serde(serialize_with = "ser::str")]
    pub network: Arc<str>,
    pub cidr: Cidr,
}

/// Which address families a service answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    Dual,
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(serialize_with = "ser::str")]
    pub name: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub namespace: Arc<str>,
    /// e.g. `appb.default.svc.cluster.local`.
    #[serde(serialize_with = "ser::str")]
    pub hostname: Arc<str>,
    /// Single VIPs; empty for a headless service.
    pub vips: Vec<NetworkAddress>,
    /// VIP ranges (prefix shorter than the family's width); looked up when no single VIP
    /// matches, the longest prefix winning.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cidr_vips: Vec<NetworkCidr>,
    pub ports: PortMap,
    /// Extra identities an endpoint of this service may present (beyond its own).
    #[serde(serialize_with = "ser::strs")]
    pub subject_alt_names: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<IpFamily>,
    /// When several namespaces define the same hostname, the canonical one wins by hostname.
    pub canonical: bool,
    /// Filled by `SnapshotBuilder::build` from the workloads' memberships; whatever is here
    /// before that is replaced.
    #[serde(serialize_with = "endpoints_by_uid")]
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    pub fn key(&self) -> NamespacedHostname {
        NamespacedHostname {
            namespace: self.namespace.clone(),
            hostname: self.hostname.clone(),
        }
    }

    /// Headless: no VIP to be reached at; its endpoints are reached by their own IPs.
    pub fn is_headless(&self) -> bool {
        self.vips.is_empty() && self.cidr_vips.is_empty()
    }

    /// `PASSTHROUGH` load balancing: connections to the VIP go to the original destination,
    /// no endpoint is chosen.
    pub fn is_passthrough(&self) -> bool {
        self.load_balancer
            .as_ref()
            .is_some_and(|lb| lb.mode == LoadBalancerMode::Passthrough)
    }

    /// The target port for `service_port` when the service declares it (0: per endpoint).
    pub fn target_port(&self, service_port: u16) -> Option<u16> {
        self.ports.get(&service_port).copied()
    }

    /// Whether an endpoint in `status` may be picked: healthy ones always, unhealthy ones
    /// only under the `AllowAll` health policy (as ztunnel decides).
    pub fn admits(&self, status: HealthStatus) -> bool {
        status == HealthStatus::Healthy
            || self
                .load_balancer
                .as_ref()
                .is_some_and(|lb| lb.health_policy == LoadBalancerHealthPolicy::AllowAll)
    }
}

// ztunnel dumps endpoints as a map keyed by workload uid.
fn endpoints_by_uid<S: serde::Serializer>(eps: &[Endpoint], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(eps.len()))?;
    for e in eps {
        m.serialize_entry(&*e.workload.uid, e)?;
    }
    m.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_port_precedence() {
        let svc = Service {
            ports: PortMap::from([(8000, 80), (9000, 0)]),
            ..Service::default()
        };
        let w = Arc::new(Workload::default());
        let plain = Endpoint {
            workload: w.clone(),
            ports: PortMap::new(),
        };
        let own = Endpoint {
            workload: w,
            ports: PortMap::from([(8000, 8080), (9000, 9090)]),
        };
        assert_eq!(plain.target_port(&svc, 8000), 80, "service mapping");
        assert_eq!(own.target_port(&svc, 8000), 8080, "endpoint mapping wins");
        assert_eq!(
            own.target_port(&svc, 9000),
            9090,
            "named target port resolved per endpoint"
        );
        assert_eq!(
            plain.target_port(&svc, 9000),
            9000,
            "0 falls back to the service port"
        );
        assert_eq!(svc.target_port(8000), Some(80));
        assert_eq!(svc.target_port(1), None);
    }

    #[test]
    fn health_policy() {
        let mut svc = Service::default();
        assert!(svc.admits(HealthStatus::Healthy));
        assert!(!svc.admits(HealthStatus::Unhealthy));
        svc.load_balancer = Some(LoadBalancer {
            health_policy: LoadBalancerHealthPolicy::AllowAll,
            ..LoadBalancer::default()
        });
        assert!(svc.admits(HealthStatus::Unhealthy));
    }
}
