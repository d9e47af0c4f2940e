//! Protobuf → `state` conversion for the xDS resources zring subscribes to: `Address`
//! (a workload or a service) and `Authorization`. Pure: no IO, no clock, no logging.
//!
//! Runs on the control thread, once per received resource. Every conversion is total: any
//! decoded message yields `Ok` or a typed [`ConvertError`], never a panic — IPs of the wrong
//! byte length, ports above 65535, enum numbers Istio never defined, missing oneofs and huge
//! strings are all errors naming the field. A converted object has also passed the snapshot
//! builder's per-object checks (`SnapshotBuilder::check_*`), so it is held to exactly the rules
//! the local YAML source is held to; only the rules between objects (duplicate IPs and VIPs)
//! are left for the build.
//!
//! Proto3 zero values mean "unset" and take the workload API's defaults: an empty service
//! account is `default`, an empty trust domain `cluster.local`, an empty cluster id
//! `Kubernetes`, a missing capacity 1, a gateway port of 0 is 15008 and an application tunnel
//! port of 0 is none.
//!
//! Everything istiod legitimately sends converts: workloads with no IP (addressed by hostname,
//! or behind a network gateway), services with no VIP (headless), VIPs with a prefix length
//! (CIDR VIPs), `PASSTHROUGH` load balancing. What routing cannot serve is refused per
//! connection (`proxy::route`), never here.
//!
//! Deliberate refusals (each a per-resource NACK, the other resources still apply): malformed
//! input only, e.g.
//! - free-text strings longer than [`MAX_TEXT_BYTES`]: they end up in headers, metric labels
//!   and logs;
//! - a prefix length longer than the address family (`10.0.0.0/33`);
//! - a workload's per-service port entry with target port 0 is dropped rather than refused:
//!   0 means "no override", which is what a missing entry means to `Endpoint::target_port`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::proto::{security as psec, workload as pw};
use crate::state::{
    ApplicationTunnel, Authorization, Cidr, CidrError, DEFAULT_CAPACITY, DEFAULT_CLUSTER_ID,
    DEFAULT_HBONE_MTLS_PORT, DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Destination,
    GatewayAddress, HealthStatus, IpFamily, LoadBalancer, LoadBalancerHealthPolicy,
    LoadBalancerMode, LoadBalancerScope, Locality, Match, NamespacedHostname, NetworkAddress,
    NetworkCidr, NetworkMode, PolicyAction, PolicyScope, PortMap, PreparedWorkload, Protocol,
    Service, ServiceAccountMatch, SnapshotBuilder, SnapshotError, StringMatch, TunnelProtocol,
    Workload, excerpt,
};

/// Longest string zring accepts in any field of an xDS resource. Real names are at most a few
/// hundred bytes (Kubernetes caps most at 253).
pub const MAX_TEXT_BYTES: usize = 4096;

/// Why one xDS resource cannot become zring state. Each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: a {len}-byte address is neither IPv4 (4 bytes) nor IPv6 (16 bytes)")]
    IpLength { field: &'static str, len: usize },
    #[error("{field}: port {value} is out of range 1-65535")]
    Port { field: &'static str, value: u32 },
    #[error("{field}: {value} is not a value Istio defines for this enum")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field} is {len} bytes, more than the {MAX_TEXT_BYTES}-byte limit")]
    TooLong { field: &'static str, len: usize },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The object breaks a snapshot rule (bad names, missing IPs, …); the message names it.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A workload and the services it is an endpoint of, each with its port mapping, checked and
/// ready to be indexed: what `SnapshotBuilder::add_prepared_workload` takes.
pub type WorkloadEntry = PreparedWorkload;

/// One converted `istio.workload.Address`.
#[expect(
    clippy::large_enum_variant,
    reason = "held by value in the resource map: boxing would add an allocation per workload"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressEntry {
    Workload(WorkloadEntry),
    Service(Service),
}

impl AddressEntry {
    /// The xDS resource name istiod gives this object: the workload's uid, or the service's
    /// `namespace/hostname`.
    pub fn resource_name(&self) -> String {
        match self {
            AddressEntry::Workload(w) => w.workload.uid.to_string(),
            AddressEntry::Service(s) => s.key().to_string(),
        }
    }
}

impl TryFrom<pw::Address> for AddressEntry {
    type Error = ConvertError;

    fn try_from(a: pw::Address) -> Result<AddressEntry, ConvertError> {
        match a.r#type {
            Some(pw::address::Type::Workload(w)) => Ok(AddressEntry::Workload(w.try_into()?)),
            Some(pw::address::Type::Service(s)) => Ok(AddressEntry::Service(s.try_into()?)),
            None => Err(ConvertError::Missing("address.type (workload or service)")),
        }
    }
}

impl TryFrom<pw::Workload> for WorkloadEntry {
    type Error = ConvertError;

    fn try_from(w: pw::Workload) -> Result<WorkloadEntry, ConvertError> {
        let workload_ips = w
            .addresses
            .iter()
            .map(|b| ip("addresses", b))
            .collect::<Result<Vec<_>, _>>()?;
        let mut memberships = Vec::with_capacity(w.services.len());
        for (key, ports) in w.services {
            let name = NamespacedHostname::parse(&key).ok_or_else(|| ConvertError::Invalid {
                field: "services",
                reason: format!("key {} is not \"namespace/hostname\"", excerpt(&key)),
            })?;
            let mut map = PortMap::new();
            for p in ports.ports {
                let service_port = port("services.servicePort", p.service_port)?;
                let target = port_or_zero("services.targetPort", p.target_port)?;
                // 0: no per-endpoint override (see the module doc).
                if target != 0 && map.insert(service_port, target).is_some() {
                    return Err(ConvertError::Invalid {
                        field: "services",
                        reason: format!("{} maps service port {service_port} twice", excerpt(&key)),
                    });
                }
            }
            memberships.push((name, map));
        }
        // prost maps are hash maps: sort so equal resources convert to equal entries.
        memberships
            .sort_by(|a, b| (&a.0.namespace, &a.0.hostname).cmp(&(&b.0.namespace, &b.0.hostname)));
        let locality = w.locality.unwrap_or_default();
        let workload = Workload {
            uid: text("uid", w.uid)?,
            name: text("name", w.name)?,
            namespace: text("namespace", w.namespace)?,
            service_account: text_or("serviceAccount", w.service_account, DEFAULT_SERVICE_ACCOUNT)?,
            trust_domain: text_or("trustDomain", w.trust_domain, DEFAULT_TRUST_DOMAIN)?,
            workload_name: text("workloadName", w.workload_name)?,
            workload_type: workload_type(w.workload_type)?.into(),
            canonical_name: text("canonicalName", w.canonical_name)?,
            canonical_revision: text("canonicalRevision", w.canonical_revision)?,
            cluster_id: text_or("clusterId", w.cluster_id, DEFAULT_CLUSTER_ID)?,
            workload_ips,
            protocol: match pw::TunnelProtocol::try_from(w.tunnel_protocol) {
                Ok(pw::TunnelProtocol::None) => Protocol::Tcp,
                Ok(pw::TunnelProtocol::Hbone) => Protocol::Hbone,
                Err(_) => return Err(unknown("tunnelProtocol", w.tunnel_protocol)),
            },
            network_mode: match pw::NetworkMode::try_from(w.network_mode) {
                Ok(pw::NetworkMode::Standard) => NetworkMode::Standard,
                Ok(pw::NetworkMode::HostNetwork) => NetworkMode::HostNetwork,
                Err(_) => return Err(unknown("networkMode", w.network_mode)),
            },
            network: text("network", w.network)?,
            node: text("node", w.node)?,
            hostname: text("hostname", w.hostname)?,
            waypoint: w.waypoint.map(|g| gateway("waypoint", g)).transpose()?,
            network_gateway: w
                .network_gateway
                .map(|g| gateway("networkGateway", g))
                .transpose()?,
            native_tunnel: w.native_tunnel,
            application_tunnel: w.application_tunnel.map(application_tunnel).transpose()?,
            status: match pw::WorkloadStatus::try_from(w.status) {
                Ok(pw::WorkloadStatus::Healthy) => HealthStatus::Healthy,
                Ok(pw::WorkloadStatus::Unhealthy) => HealthStatus::Unhealthy,
                Err(_) => return Err(unknown("status", w.status)),
            },
            authorization_policies: w
                .authorization_policies
                .into_iter()
                .map(|p| text("authorizationPolicies", p))
                .collect::<Result<_, _>>()?,
            locality: Locality {
                region: text("locality.region", locality.region)?,
                zone: text("locality.zone", locality.zone)?,
                subzone: text("locality.subzone", locality.subzone)?,
            },
            capacity: w.capacity.unwrap_or(DEFAULT_CAPACITY),
            services: Vec::new(), // rebuilt from the memberships by the builder
        };
        Ok(PreparedWorkload::new(workload, memberships)?)
    }
}

impl TryFrom<pw::Service> for Service {
    type Error = ConvertError;

    fn try_from(s: pw::Service) -> Result<Service, ConvertError> {
        // Empty for a headless service: kept, reached through its endpoints' addresses.
        let mut vips = Vec::with_capacity(s.addresses.len());
        let mut cidr_vips = Vec::new();
        for a in s.addresses {
            match vip("addresses", a)? {
                Vip::One(v) => vips.push(v),
                Vip::Range(c) => cidr_vips.push(c),
            }
        }
        let mut ports = PortMap::new();
        for p in s.ports {
            let service_port = port("ports.servicePort", p.service_port)?;
            let target = port_or_zero("ports.targetPort", p.target_port)?;
            if ports.insert(service_port, target).is_some() {
                return Err(ConvertError::Invalid {
                    field: "ports",
                    reason: format!("maps service port {service_port} twice"),
                });
            }
        }
        let service = Service {
            name: text("name", s.name)?,
            namespace: text("namespace", s.namespace)?,
            hostname: text("hostname", s.hostname)?,
            vips,
            cidr_vips,
            ports,
            subject_alt_names: s
                .subject_alt_names
                .into_iter()
                .map(|n| text("subjectAltNames", n))
                .collect::<Result<_, _>>()?,
            waypoint: s.waypoint.map(|g| gateway("waypoint", g)).transpose()?,
            load_balancer: s.load_balancing.map(load_balancer).transpose()?,
            ip_families: match pw::IpFamilies::try_from(s.ip_families) {
                Ok(pw::IpFamilies::Automatic) => None,
                Ok(pw::IpFamilies::Ipv4Only) => Some(IpFamily::V4),
                Ok(pw::IpFamilies::Ipv6Only) => Some(IpFamily::V6),
                Ok(pw::IpFamilies::Dual) => Some(IpFamily::Dual),
                Err(_) => return Err(unknown("ipFamilies", s.ip_families)),
            },
            canonical: s.canonical,
            endpoints: Vec::new(), // derived from the workloads by the builder
        };
        SnapshotBuilder::check_service(&service)?;
        Ok(service)
    }
}

impl TryFrom<psec::Authorization> for Authorization {
    type Error = ConvertError;

    fn try_from(p: psec::Authorization) -> Result<Authorization, ConvertError> {
        let mut rules = Vec::with_capacity(p.rules.len());
        for rule in p.rules {
            let mut clauses = Vec::with_capacity(rule.clauses.len());
            for clause in rule.clauses {
                let matches = clause
                    .matches
                    .into_iter()
                    .map(match_group)
                    .collect::<Result<Vec<_>, _>>()?;
                clauses.push(matches);
            }
            rules.push(clauses);
        }
        let policy = Authorization {
            name: text("name", p.name)?,
            namespace: text("namespace", p.namespace)?,
            scope: match psec::Scope::try_from(p.scope) {
                Ok(psec::Scope::Global) => PolicyScope::Global,
                Ok(psec::Scope::Namespace) => PolicyScope::Namespace,
                Ok(psec::Scope::WorkloadSelector) => PolicyScope::WorkloadSelector,
                Err(_) => return Err(unknown("scope", p.scope)),
            },
            action: match psec::Action::try_from(p.action) {
                Ok(psec::Action::Allow) => PolicyAction::Allow,
                Ok(psec::Action::Deny) => PolicyAction::Deny,
                Err(_) => return Err(unknown("action", p.action)),
            },
            dry_run: p.dry_run,
            rules,
        };
        SnapshotBuilder::check_policy(&policy)?;
        Ok(policy)
    }
}

fn match_group(m: psec::Match) -> Result<Match, ConvertError> {
    let strings = |field: &'static str, list: Vec<psec::StringMatch>| {
        list.into_iter()
            .map(|s| string_match(field, s))
            .collect::<Result<Vec<_>, _>>()
    };
    let accounts = |field: &'static str, list: Vec<psec::ServiceAccountMatch>| {
        list.into_iter()
            .map(|a| {
                Ok(ServiceAccountMatch {
                    namespace: text(field, a.namespace)?,
                    service_account: text(field, a.service_account)?,
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()
    };
    let cidrs = |field: &'static str, list: Vec<psec::Address>| {
        list.into_iter()
            .map(|a| cidr(field, a))
            .collect::<Result<Vec<_>, _>>()
    };
    let ports = |field: &'static str, list: Vec<u32>| {
        list.into_iter()
            .map(|p| port(field, p))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Match {
        namespaces: strings("namespaces", m.namespaces)?,
        not_namespaces: strings("notNamespaces", m.not_namespaces)?,
        service_accounts: accounts("serviceAccounts", m.service_accounts)?,
        not_service_accounts: accounts("notServiceAccounts", m.not_service_accounts)?,
        principals: strings("principals", m.principals)?,
        not_principals: strings("notPrincipals", m.not_principals)?,
        source_ips: cidrs("sourceIps", m.source_ips)?,
        not_source_ips: cidrs("notSourceIps", m.not_source_ips)?,
        destination_ips: cidrs("destinationIps", m.destination_ips)?,
        not_destination_ips: cidrs("notDestinationIps", m.not_destination_ips)?,
        destination_ports: ports("destinationPorts", m.destination_ports)?,
        not_destination_ports: ports("notDestinationPorts", m.not_destination_ports)?,
    })
}

fn string_match(field: &'static str, s: psec::StringMatch) -> Result<StringMatch, ConvertError> {
    use psec::string_match::MatchType;
    Ok(match s.match_type {
        Some(MatchType::Exact(v)) => StringMatch::Exact(text(field, v)?),
        Some(MatchType::Prefix(v)) => StringMatch::Prefix(text(field, v)?),
        Some(MatchType::Suffix(v)) => StringMatch::Suffix(text(field, v)?),
        Some(MatchType::Presence(())) => StringMatch::Presence,
        None => {
            return Err(ConvertError::Missing(
                "string match (exact, prefix, suffix or presence)",
            ));
        }
    })
}

fn cidr(field: &'static str, a: psec::Address) -> Result<Cidr, ConvertError> {
    let addr = ip(field, &a.address)?;
    let invalid = |e: CidrError| ConvertError::Invalid {
        field,
        reason: format!("{addr}/{}: {e}", a.length),
    };
    let prefix = u8::try_from(a.length).map_err(|_| {
        invalid(CidrError::PrefixTooLong {
            prefix: a.length,
            max: if addr.is_ipv4() { 32 } else { 128 },
        })
    })?;
    Cidr::new(addr, prefix).map_err(invalid)
}

fn gateway(field: &'static str, g: pw::GatewayAddress) -> Result<GatewayAddress, ConvertError> {
    use pw::gateway_address::Destination as D;
    let destination = match g.destination {
        Some(D::Hostname(h)) => Destination::Hostname(NamespacedHostname {
            namespace: text(field, h.namespace)?,
            hostname: text(field, h.hostname)?,
        }),
        Some(D::Address(a)) => Destination::Address(network_address(field, a)?),
        None => {
            return Err(ConvertError::Missing(
                "gateway destination (hostname or address)",
            ));
        }
    };
    let hbone_mtls_port = match g.hbone_mtls_port {
        0 => DEFAULT_HBONE_MTLS_PORT,
        p => port(field, p)?,
    };
    Ok(GatewayAddress {
        destination,
        hbone_mtls_port,
    })
}

fn application_tunnel(t: pw::ApplicationTunnel) -> Result<ApplicationTunnel, ConvertError> {
    use pw::application_tunnel::Protocol as P;
    Ok(ApplicationTunnel {
        protocol: match P::try_from(t.protocol) {
            Ok(P::None) => TunnelProtocol::None,
            Ok(P::Proxy) => TunnelProtocol::Proxy,
            Err(_) => return Err(unknown("applicationTunnel.protocol", t.protocol)),
        },
        port: match t.port {
            0 => None,
            p => Some(port("applicationTunnel.port", p)?),
        },
    })
}

fn load_balancer(lb: pw::LoadBalancing) -> Result<LoadBalancer, ConvertError> {
    use pw::load_balancing::{HealthPolicy as H, Mode as M, Scope as S};
    let routing_preferences = lb
        .routing_preference
        .iter()
        .map(|&v| match S::try_from(v) {
            Ok(S::Region) => Ok(LoadBalancerScope::Region),
            Ok(S::Zone) => Ok(LoadBalancerScope::Zone),
            Ok(S::Subzone) => Ok(LoadBalancerScope::Subzone),
            Ok(S::Node) => Ok(LoadBalancerScope::Node),
            Ok(S::Cluster) => Ok(LoadBalancerScope::Cluster),
            Ok(S::Network) => Ok(LoadBalancerScope::Network),
            // UNSPECIFIED_SCOPE names no dimension: a preference for it means nothing.
            Ok(S::UnspecifiedScope) | Err(_) => Err(unknown("loadBalancing.routingPreference", v)),
        })
        .collect::<Result<_, _>>()?;
    Ok(LoadBalancer {
        routing_preferences,
        mode: match M::try_from(lb.mode) {
            Ok(M::UnspecifiedMode) => LoadBalancerMode::Standard,
            Ok(M::Strict) => LoadBalancerMode::Strict,
            Ok(M::Failover) => LoadBalancerMode::Failover,
            Ok(M::Passthrough) => LoadBalancerMode::Passthrough,
            Err(_) => return Err(unknown("loadBalancing.mode", lb.mode)),
        },
        health_policy: match H::try_from(lb.health_policy) {
            Ok(H::OnlyHealthy) => LoadBalancerHealthPolicy::OnlyHealthy,
            Ok(H::AllowAll) => LoadBalancerHealthPolicy::AllowAll,
            Err(_) => return Err(unknown("loadBalancing.healthPolicy", lb.health_policy)),
        },
    })
}

/// The telemetry spelling of a workload type, as the local config and baggage use it.
fn workload_type(v: i32) -> Result<&'static str, ConvertError> {
    Ok(match pw::WorkloadType::try_from(v) {
        Ok(pw::WorkloadType::Deployment) => "deployment",
        Ok(pw::WorkloadType::Cronjob) => "cronjob",
        Ok(pw::WorkloadType::Pod) => "pod",
        Ok(pw::WorkloadType::Job) => "job",
        Err(_) => return Err(unknown("workloadType", v)),
    })
}

/// A service address: one VIP, or a range when it carries a prefix shorter than its family.
enum Vip {
    One(NetworkAddress),
    Range(NetworkCidr),
}

fn vip(field: &'static str, a: pw::NetworkAddress) -> Result<Vip, ConvertError> {
    let length = a.length;
    let addr = network_address_of(field, a.network, &a.address)?;
    let max: u8 = if addr.address.is_ipv4() { 32 } else { 128 };
    match length {
        None => Ok(Vip::One(addr)),
        Some(l) if l == u32::from(max) => Ok(Vip::One(addr)),
        Some(l) => {
            let invalid = |e: CidrError| ConvertError::Invalid {
                field,
                reason: format!("{}/{l}: {e}", addr.address),
            };
            let prefix = u8::try_from(l)
                .map_err(|_| invalid(CidrError::PrefixTooLong { prefix: l, max }))?;
            let cidr = Cidr::new(addr.address, prefix).map_err(invalid)?;
            Ok(Vip::Range(NetworkCidr {
                network: addr.network,
                cidr,
            }))
        }
    }
}

/// A gateway's address: one IP (a prefix length would make no sense there and is refused).
fn network_address(
    field: &'static str,
    a: pw::NetworkAddress,
) -> Result<NetworkAddress, ConvertError> {
    if let Some(l) = a.length
        && l != if a.address.len() == 4 { 32 } else { 128 }
    {
        return Err(ConvertError::Invalid {
            field,
            reason: format!("a gateway is one address, not a /{l} range"),
        });
    }
    network_address_of(field, a.network, &a.address)
}

fn network_address_of(
    field: &'static str,
    network: String,
    address: &[u8],
) -> Result<NetworkAddress, ConvertError> {
    Ok(NetworkAddress {
        network: text(field, network)?,
        address: ip(field, address)?,
    })
}

/// An IP from its raw bytes, IPv4-mapped IPv6 stored as IPv4 (the form lookups use).
fn ip(field: &'static str, bytes: &[u8]) -> Result<IpAddr, ConvertError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)).to_canonical());
    }
    Err(ConvertError::IpLength {
        field,
        len: bytes.len(),
    })
}

fn port(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConvertError::Port { field, value }),
    }
}

fn port_or_zero(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    u16::try_from(value).map_err(|_| ConvertError::Port { field, value })
}

fn text(field: &'static str, s: String) -> Result<Arc<str>, ConvertError> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(ConvertError::TooLong {
            field,
            len: s.len(),
        });
    }
    Ok(s.into())
}

fn text_or(field: &'static str, s: String, default: &str) -> Result<Arc<str>, ConvertError> {
    if s.is_empty() {
        Ok(default.into())
    } else {
        text(field, s)
    }
}

fn unknown(field: &'static str, value: i32) -> ConvertError {
    ConvertError::UnknownEnum { field, value }
}

#[cfg(test)]
mod tests;
