//! `Workload` (a pod, VM or other addressable endpoint of the mesh) and the address types it
//! shares with services: `NetworkAddress`, `NamespacedHostname`, `GatewayAddress`. Pure data,
//! built by the control thread's config sources and read, through `Arc`, by every core.
//!
//! Field names and defaults follow Istio's workload API as ztunnel models it: an empty service
//! account means `default`, an empty trust domain `cluster.local`, an empty cluster id
//! `Kubernetes`, and capacity defaults to 1. Serialization uses ztunnel's camelCase names so a
//! config dump reads like ztunnel's.
//!
//! Invariants once a workload is inside a `Snapshot` (enforced by `SnapshotBuilder::build`):
//! `uid` is non-empty and unique, `workload_ips` is non-empty and canonical (no IPv4-mapped
//! IPv6), and `namespace`/`service_account`/`trust_domain` make an unambiguous SPIFFE identity.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ser;

/// How a workload accepts mesh traffic. YAML and JSON spell these `TCP` and `HBONE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// Plain TCP: the workload is not captured by a mesh proxy; connect to it directly.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// The workload's node proxy accepts HBONE (mTLS HTTP/2 CONNECT) on port 15008.
    #[serde(rename = "HBONE")]
    Hbone,
}

/// Whether the workload is ready to receive load-balanced traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    #[default]
    Healthy,
    Unhealthy,
}

/// Host-network workloads share their node's IP, so they are not indexed by IP (as in ztunnel):
/// the address would collide with the node and with every other host-network pod on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkMode {
    #[default]
    Standard,
    HostNetwork,
}

/// Where a workload runs, for locality-preferring load balancing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Locality {
    #[serde(serialize_with = "ser::str")]
    pub region: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub zone: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub subzone: Arc<str>,
}

/// An IP on a named network. Text form `network/IP`; the default network is the empty string,
/// so `/10.96.0.1` is 10.96.0.1 on the default network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkAddress {
    pub network: Arc<str>,
    pub address: IpAddr,
}

impl NetworkAddress {
    /// Parses `network/IP` (the slash is required, as in ztunnel). IPv4-mapped IPv6 addresses
    /// are stored as IPv4, the form lookups use.
    pub fn parse(s: &str) -> Option<NetworkAddress> {
        let (network, ip) = s.split_once('/')?;
        let address = ip.parse::<IpAddr>().ok()?.to_canonical();
        Some(NetworkAddress {
            network: network.into(),
            address,
        })
    }
}

impl fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.address)
    }
}

impl Serialize for NetworkAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A service's primary key: its namespace and hostname. Text form `namespace/hostname`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespacedHostname {
    pub namespace: Arc<str>,
    pub hostname: Arc<str>,
}

impl NamespacedHostname {
    /// Splits `namespace/hostname` at its only '/'; `None` when there is no '/' or more than
    /// one, or either side is empty. The parts' charsets are checked when the snapshot is built.
    pub fn parse(s: &str) -> Option<NamespacedHostname> {
        let (namespace, hostname) = s.split_once('/')?;
        if namespace.is_empty() || hostname.is_empty() || hostname.contains('/') {
            return None;
        }
        Some(NamespacedHostname {
            namespace: namespace.into(),
            hostname: hostname.into(),
        })
    }
}

impl fmt::Display for NamespacedHostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

impl Serialize for NamespacedHostname {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a gateway (waypoint or network gateway) is: an address, or a service to resolve.
/// Serialized as the text form of either (`network/IP` or `namespace/hostname`), as ztunnel does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Address(NetworkAddress),
    Hostname(NamespacedHostname),
}

impl Destination {
    /// `network/IP` if the part after the first '/' is an IP, else `namespace/hostname`
    /// (ztunnel tries the two forms in the same order).
    pub fn parse(s: &str) -> Option<Destination> {
        NetworkAddress::parse(s)
            .map(Destination::Address)
            .or_else(|| NamespacedHostname::parse(s).map(Destination::Hostname))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Address(a) => a.fmt(f),
            Destination::Hostname(h) => h.fmt(f),
        }
    }
}

impl Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The HBONE port gateways listen on unless told otherwise.
pub const DEFAULT_HBONE_MTLS_PORT: u16 = 15008;

/// A waypoint or network gateway, reached over HBONE on `hbone_mtls_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    pub destination: Destination,
    pub hbone_mtls_port: u16,
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} port {}", self.destination, self.hbone_mtls_port)
    }
}

/// The protocol an application-level tunnel in front of the workload expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TunnelProtocol {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "PROXY")]
    Proxy,
}

/// A tunnel the workload itself terminates (e.g. PROXY protocol in front of a sandwiched
/// waypoint). Carried for fidelity with ztunnel's config; routing ignores it for now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTunnel {
    pub protocol: TunnelProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One addressable workload of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Unique key, e.g. `Kubernetes//Pod/default/appa-bf7c45dcb-lmtg2`.
    #[serde(serialize_with = "ser::str")]
    pub uid: Arc<str>,
    /// Pod (or VM) name.
    #[serde(serialize_with = "ser::str")]
    pub name: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub namespace: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub service_account: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub trust_domain: Arc<str>,
    /// The owning controller's name (the deployment), for telemetry.
    #[serde(serialize_with = "ser::str")]
    pub workload_name: Arc<str>,
    /// `deployment`, `pod`, `job` or `cronjob`, for telemetry and baggage.
    #[serde(serialize_with = "ser::str")]
    pub workload_type: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub canonical_name: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub canonical_revision: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub cluster_id: Arc<str>,
    pub workload_ips: Vec<IpAddr>,
    pub protocol: Protocol,
    pub network_mode: NetworkMode,
    #[serde(serialize_with = "ser::str")]
    pub network: Arc<str>,
    /// The node the workload runs on; traffic to workloads on our node is direct-local.
    #[serde(serialize_with = "ser::str")]
    pub node: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub hostname: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_gateway: Option<GatewayAddress>,
    pub native_tunnel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_tunnel: Option<ApplicationTunnel>,
    pub status: HealthStatus,
    /// Keys (`namespace/name`) of the workload-selector policies that apply to it.
    #[serde(serialize_with = "ser::strs")]
    pub authorization_policies: Vec<Arc<str>>,
    pub locality: Locality,
    /// Load-balancing weight relative to the service's other endpoints.
    pub capacity: u32,
    /// The services this workload is an endpoint of (set by `SnapshotBuilder::build` from the
    /// memberships it is given, so it always agrees with the services' endpoint lists).
    pub services: Vec<NamespacedHostname>,
}

impl Default for Workload {
    /// ztunnel's defaults: service account `default`, trust domain `cluster.local`, cluster
    /// `Kubernetes`, capacity 1, TCP, healthy; everything else empty.
    fn default() -> Workload {
        Workload {
            uid: "".into(),
            name: "".into(),
            namespace: "".into(),
            service_account: DEFAULT_SERVICE_ACCOUNT.into(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            workload_name: "".into(),
            workload_type: "".into(),
            canonical_name: "".into(),
            canonical_revision: "".into(),
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            workload_ips: Vec::new(),
            protocol: Protocol::Tcp,
            network_mode: NetworkMode::Standard,
            network: "".into(),
            node: "".into(),
            hostname: "".into(),
            waypoint: None,
            network_gateway: None,
            native_tunnel: false,
            application_tunnel: None,
            status: HealthStatus::Healthy,
            authorization_policies: Vec::new(),
            locality: Locality::default(),
            capacity: DEFAULT_CAPACITY,
            services: Vec::new(),
        }
    }
}

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";
pub const DEFAULT_CAPACITY: u32 = 1;

impl Workload {
    /// The names the workload's SPIFFE identity is made of: (trust domain, namespace, service
    /// account). `identity::Identity::of_workload` makes the identity from them (`state` cannot
    /// import `identity`, which builds on it); the metrics labels render them without
    /// allocating.
    pub fn identity_parts(&self) -> (&str, &str, &str) {
        (&self.trust_domain, &self.namespace, &self.service_account)
    }

    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_defaults() {
        let w = Workload {
            namespace: "default".into(),
            ..Workload::default()
        };
        assert_eq!(
            crate::identity::Identity::of_workload(&w).unwrap().as_str(),
            "spiffe://cluster.local/ns/default/sa/default"
        );
        assert_eq!(w.identity_parts(), ("cluster.local", "default", "default"));
        assert_eq!(&*w.cluster_id, "Kubernetes");
        assert_eq!(w.capacity, 1);
        assert_eq!(w.protocol, Protocol::Tcp);
        assert!(w.is_healthy());
    }

    #[test]
    fn text_forms() {
        let a = NetworkAddress::parse("/10.96.101.203").unwrap();
        assert_eq!(
            (&*a.network, a.address.to_string().as_str()),
            ("", "10.96.101.203")
        );
        assert_eq!(a.to_string(), "/10.96.101.203");
        let mapped = NetworkAddress::parse("net1/::ffff:10.0.0.1").unwrap();
        assert_eq!(
            mapped.to_string(),
            "net1/10.0.0.1",
            "mapped IPv6 is stored as IPv4"
        );
        assert!(
            NetworkAddress::parse("10.96.101.203").is_none(),
            "the slash is required"
        );
        assert!(NetworkAddress::parse("/not-an-ip").is_none());

        let h = NamespacedHostname::parse("default/appb.default.svc.cluster.local").unwrap();
        assert_eq!(h.to_string(), "default/appb.default.svc.cluster.local");
        for bad in ["appb", "/appb", "default/", "a/b/c", ""] {
            assert!(NamespacedHostname::parse(bad).is_none(), "{bad}");
        }

        assert!(matches!(
            Destination::parse("/10.0.0.9"),
            Some(Destination::Address(_))
        ));
        assert!(matches!(
            Destination::parse("ns/wp.ns.svc"),
            Some(Destination::Hostname(_))
        ));
        assert!(Destination::parse("nothing").is_none());
        let gw = GatewayAddress {
            destination: Destination::parse("ns/wp.ns.svc").unwrap(),
            hbone_mtls_port: 15008,
        };
        assert_eq!(gw.to_string(), "ns/wp.ns.svc port 15008");
    }
}
