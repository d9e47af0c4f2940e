//! Workloads: ztunnel's `LocalWorkload` YAML shape (`RawWorkload` and its parts) and its
//! conversion into a `state::Workload` plus the services it belongs to (`Memberships`). Pure;
//! runs on the control thread (or whichever thread calls `parse`). Invariant: every error names
//! the workload (by UID, else by index and name) and the field at fault.

use std::net::IpAddr;

use serde::Deserialize;

use super::budget::{Entries, List, Str, Text};
use super::{LocalConfigError, RawGateway, gateway, invalid, port_map};
use crate::state::{
    ApplicationTunnel, DEFAULT_CAPACITY, DEFAULT_CLUSTER_ID, DEFAULT_SERVICE_ACCOUNT,
    DEFAULT_TRUST_DOMAIN, HealthStatus, Locality, NamespacedHostname, NetworkMode, PortMap,
    Protocol, TunnelProtocol, Workload, excerpt,
};

fn or_default(t: Str, default: &str) -> std::sync::Arc<str> {
    if t.0.is_empty() {
        default.into()
    } else {
        t.0.into()
    }
}

pub(super) type Memberships = Vec<(NamespacedHostname, PortMap)>;

pub(super) fn workload(
    index: usize,
    w: RawWorkload,
) -> Result<(Workload, Memberships), LocalConfigError> {
    let subject = &if w.uid.0.is_empty() {
        format!("workload #{index} (name {})", excerpt(&w.name.0))
    } else {
        format!("workload {}", excerpt(&w.uid.0))
    };
    let mut ips = Vec::with_capacity(w.workload_ips.0.len());
    for ip in &w.workload_ips.0 {
        match ip.0.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip.to_canonical()),
            Err(_) => {
                return Err(invalid(
                    subject,
                    "workloadIps",
                    format!("{} is not an IP address", excerpt(&ip.0)),
                ));
            }
        }
    }
    let mut memberships = Vec::with_capacity(w.services.0.len());
    for (key, ports) in w.services.0 {
        let Some(name) = NamespacedHostname::parse(&key.0) else {
            let why = format!("key {} is not \"namespace/hostname\"", excerpt(&key.0));
            return Err(invalid(subject, "services", why));
        };
        if memberships.iter().any(|(k, _)| *k == name) {
            return Err(invalid(
                subject,
                "services",
                format!("lists {} twice", excerpt(&key.0)),
            ));
        }
        let ports = port_map(subject, "services", ports)?;
        memberships.push((name, ports));
    }
    let locality = w.locality.map_or_else(Locality::default, |l| Locality {
        region: l.region.0.into(),
        zone: l.zone.0.into(),
        subzone: l.subzone.0.into(),
    });
    let workload = Workload {
        uid: w.uid.0.into(),
        name: w.name.0.into(),
        namespace: w.namespace.0.into(),
        service_account: or_default(w.service_account, DEFAULT_SERVICE_ACCOUNT),
        trust_domain: or_default(w.trust_domain, DEFAULT_TRUST_DOMAIN),
        workload_name: w.workload_name.0.into(),
        workload_type: w.workload_type.0.into(),
        canonical_name: w.canonical_name.0.into(),
        canonical_revision: w.canonical_revision.0.into(),
        cluster_id: or_default(w.cluster_id, DEFAULT_CLUSTER_ID),
        workload_ips: ips,
        protocol: w.protocol,
        network_mode: w.network_mode,
        network: w.network.0.into(),
        node: w.node.0.into(),
        hostname: w.hostname.0.into(),
        waypoint: w
            .waypoint
            .map(|g| gateway(subject, "waypoint", g))
            .transpose()?,
        network_gateway: w
            .network_gateway
            .map(|g| gateway(subject, "networkGateway", g))
            .transpose()?,
        native_tunnel: w.native_tunnel,
        application_tunnel: w.application_tunnel.map(|t| ApplicationTunnel {
            protocol: t.protocol,
            port: t.port,
        }),
        status: w.status,
        authorization_policies: w
            .authorization_policies
            .0
            .into_iter()
            .map(|t| t.0.into())
            .collect(),
        locality,
        capacity: w.capacity.unwrap_or(DEFAULT_CAPACITY),
        services: Vec::new(), // rebuilt from the memberships by the builder
    };
    Ok((workload, memberships))
}

// ---- raw YAML shapes: ztunnel's spellings, required where ztunnel requires them ----

/// ztunnel's `LocalWorkload`: its `Workload` flattened, plus `services`. Required as in
/// ztunnel: `namespace`, `workloadIps`, `services`. String fields are `Str` (see there).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawWorkload {
    #[serde(default)]
    uid: Str,
    #[serde(default)]
    name: Str,
    namespace: Str,
    #[serde(default)]
    service_account: Str,
    #[serde(default)]
    trust_domain: Str,
    #[serde(default)]
    workload_name: Str,
    #[serde(default)]
    workload_type: Str,
    #[serde(default)]
    canonical_name: Str,
    #[serde(default)]
    canonical_revision: Str,
    #[serde(default)]
    cluster_id: Str,
    workload_ips: List<Text>,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    network_mode: NetworkMode,
    #[serde(default)]
    network: Str,
    #[serde(default)]
    node: Str,
    #[serde(default)]
    hostname: Str,
    #[serde(default)]
    waypoint: Option<RawGateway>,
    #[serde(default)]
    network_gateway: Option<RawGateway>,
    #[serde(default)]
    native_tunnel: bool,
    #[serde(default)]
    application_tunnel: Option<RawApplicationTunnel>,
    #[serde(default)]
    status: HealthStatus,
    #[serde(default)]
    authorization_policies: List<Str>,
    #[serde(default)]
    locality: Option<RawLocality>,
    #[serde(default)]
    capacity: Option<u32>,
    /// `"namespace/hostname": {servicePort: targetPort}`; `{}` when none (ztunnel requires it).
    services: Entries<Text, Entries<u16, u16>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawApplicationTunnel {
    protocol: TunnelProtocol,
    #[serde(default)]
    port: Option<u16>,
}

/// All three required, unknown fields ignored: ztunnel's `Locality` exactly.
#[derive(Deserialize)]
struct RawLocality {
    region: Str,
    zone: Str,
    subzone: Str,
}
