//! `/config_dump`: the node's view of the mesh in ztunnel's JSON shape, so `istioctl
//! ztunnel-config` and people who know ztunnel read it unchanged.
//!
//! Runs on the control thread, from the published snapshot and certificate store (no core is
//! asked anything). Top-level keys, camelCase as ztunnel's: `workloads` (sorted by uid),
//! `services` (by hostname, then namespace), `policies` (by `namespace/name`),
//! `stagedServices` (always empty: zring builds services and endpoints together),
//! `staticConfig` (the `LOCAL_XDS_PATH` file as JSON), `version`, `config`, `certificates`.
//!
//! A workload is written with ztunnel's omissions (empty optional fields left out), services
//! and policies with the `state` types' own serialization, which already follows ztunnel's.
//! Certificates: one entry per identity this node must hold or holds, `Available` with the
//! chain and roots, `Unavailable: <error>` after a failed request, `Initializing` before the
//! first answer; each certificate as base64 of its PEM, decimal serial number, and RFC 3339
//! validity bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::Config;
use crate::core::Shared;
use crate::identity::{self, CertStore, Identity};
use crate::metrics::BuildInfo;
use crate::state::{
    ApplicationTunnel, Authorization, GatewayAddress, HealthStatus, Locality, NamespacedHostname,
    NetworkMode, Protocol, Service, Workload,
};

/// The whole dump.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump<'a> {
    pub workloads: Vec<WorkloadDump<'a>>,
    pub services: Vec<&'a Service>,
    pub policies: Vec<&'a Authorization>,
    pub staged_services: BTreeMap<String, ()>,
    pub static_config: serde_json::Value,
    pub version: BuildInfo,
    pub config: ConfigView<'a>,
    pub certificates: Vec<CertsDump>,
}

/// Builds the dump of `shared`'s current state; `failures` are the latest certificate
/// request errors by identity.
pub fn build(
    shared: &Shared,
    failures: &BTreeMap<Identity, String>,
    now: SystemTime,
) -> ConfigDumpOwned {
    let snapshot = shared.snapshot.load_full();
    let store = shared.certs.load_full();
    let config = shared.config.clone();
    let wanted = identity::local_identities(&snapshot, &config.node_name);
    ConfigDumpOwned {
        static_config: static_config(&config),
        certificates: certificates(&store, &wanted, failures, now),
        snapshot,
        config,
    }
}

/// The data a dump borrows from, held while it is serialized.
#[derive(Debug)]
pub struct ConfigDumpOwned {
    snapshot: std::sync::Arc<crate::state::Snapshot>,
    config: std::sync::Arc<Config>,
    static_config: serde_json::Value,
    certificates: Vec<CertsDump>,
}

impl ConfigDumpOwned {
    pub fn view(&self) -> ConfigDump<'_> {
        let mut workloads: Vec<&Workload> = self.snapshot.workloads().map(|w| &**w).collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<&Service> = self.snapshot.services().map(|s| &**s).collect();
        services.sort_by(|a, b| (&a.hostname, &a.namespace).cmp(&(&b.hostname, &b.namespace)));
        let mut policies: Vec<&Authorization> = self.snapshot.policies().map(|p| &**p).collect();
        policies.sort_by_key(|p| p.key());
        ConfigDump {
            workloads: workloads.into_iter().map(WorkloadDump).collect(),
            services,
            policies,
            staged_services: BTreeMap::new(),
            static_config: self.static_config.clone(),
            version: BuildInfo::current(),
            config: ConfigView::new(&self.config),
            certificates: self.certificates.clone(),
        }
    }
}

impl Serialize for ConfigDumpOwned {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

/// The `LOCAL_XDS_PATH` file as JSON, ztunnel's `staticConfig`; empty lists without a file
/// (or when the file no longer parses: the snapshot in use is in `workloads` anyway).
fn static_config(config: &Config) -> serde_json::Value {
    let empty = || serde_json::json!({"workloads": [], "policies": [], "services": []});
    let Some(path) = &config.local_xds_path else {
        return empty();
    };
    let parsed = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| crate::xds::local::to_json(&text));
    match parsed {
        Some(serde_json::Value::Object(mut m)) => {
            for key in ["workloads", "policies", "services"] {
                m.entry(key).or_insert_with(|| serde_json::json!([]));
            }
            serde_json::Value::Object(m)
        }
        _ => empty(),
    }
}

fn is_empty_str(s: &&str) -> bool {
    s.is_empty()
}

/// A workload as ztunnel writes it: optional fields omitted when empty.
#[derive(Debug)]
pub struct WorkloadDump<'a>(pub &'a Workload);

impl Serialize for WorkloadDump<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct View<'a> {
            workload_ips: &'a [IpAddr],
            #[serde(skip_serializing_if = "Option::is_none")]
            waypoint: Option<&'a GatewayAddress>,
            #[serde(skip_serializing_if = "Option::is_none")]
            network_gateway: Option<&'a GatewayAddress>,
            protocol: Protocol,
            network_mode: NetworkMode,
            #[serde(skip_serializing_if = "is_empty_str")]
            uid: &'a str,
            name: &'a str,
            namespace: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            trust_domain: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            service_account: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            network: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            workload_name: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            workload_type: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            canonical_name: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            canonical_revision: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            hostname: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            node: &'a str,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            native_tunnel: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            application_tunnel: Option<TunnelView<'a>>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            authorization_policies: Vec<&'a str>,
            status: HealthStatus,
            cluster_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            locality: Option<&'a Locality>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            services: &'a [NamespacedHostname],
            capacity: u32,
        }
        #[derive(Serialize)]
        struct TunnelView<'a> {
            protocol: &'a crate::state::TunnelProtocol,
            port: Option<u16>,
        }
        let w = self.0;
        View {
            workload_ips: &w.workload_ips,
            waypoint: w.waypoint.as_ref(),
            network_gateway: w.network_gateway.as_ref(),
            protocol: w.protocol,
            network_mode: w.network_mode,
            uid: &w.uid,
            name: &w.name,
            namespace: &w.namespace,
            trust_domain: &w.trust_domain,
            service_account: &w.service_account,
            network: &w.network,
            workload_name: &w.workload_name,
            workload_type: &w.workload_type,
            canonical_name: &w.canonical_name,
            canonical_revision: &w.canonical_revision,
            hostname: &w.hostname,
            node: &w.node,
            native_tunnel: w.native_tunnel,
            application_tunnel: w.application_tunnel.as_ref().map(|t: &ApplicationTunnel| {
                TunnelView {
                    protocol: &t.protocol,
                    port: t.port,
                }
            }),
            authorization_policies: w.authorization_policies.iter().map(|p| &**p).collect(),
            status: w.status,
            cluster_id: &w.cluster_id,
            locality: (w.locality != Locality::default()).then_some(&w.locality),
            services: &w.services,
            capacity: w.capacity,
        }
        .serialize(s)
    }
}

/// The configuration, under ztunnel's field names where zring has the same setting.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView<'a> {
    pub cluster_id: &'a str,
    pub local_node: &'a str,
    pub trust_domain: &'a str,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub xds_address: Option<&'a str>,
    pub ca_address: Option<&'a str>,
    pub local_xds_config: Option<String>,
    pub secret_ttl: Duration,
    pub proxy_metadata: &'a BTreeMap<String, String>,
    pub admin_addr: SocketAddr,
    pub stats_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub inbound_plaintext_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub window_size: u32,
    pub connection_window_size: u32,
    pub frame_size: u32,
    pub pool_max_streams_per_conn: u32,
    pub pool_unused_release_timeout: Duration,
    pub packet_mark: u32,
    pub num_worker_threads: usize,
    pub illegal_ports: &'a [u16],
    /// zring's own settings, which ztunnel does not have.
    pub zring: ZringView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZringView {
    pub driver: String,
    pub pin_cores: bool,
    pub uring_entries: u32,
    /// `ZRING_URING_SETUP` as configured (`none` or the flags joined by commas).
    pub uring_setup: String,
    pub buffer_size: usize,
    pub connect_timeout: Duration,
    pub listen_backlog: i32,
    pub log_format: String,
}

impl<'a> ConfigView<'a> {
    pub fn new(c: &'a Config) -> ConfigView<'a> {
        use crate::hbone::{CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};
        ConfigView {
            cluster_id: &c.cluster_id,
            local_node: &c.node_name,
            trust_domain: &c.trust_domain,
            pod_name: &c.pod_name,
            pod_namespace: &c.pod_namespace,
            xds_address: c.xds.as_ref().map(|t| t.address()),
            ca_address: c.ca.as_ref().map(|t| t.address()),
            local_xds_config: c.local_xds_path.as_ref().map(|p| p.display().to_string()),
            secret_ttl: c.secret_ttl,
            proxy_metadata: &c.proxy_metadata,
            admin_addr: c.admin_addr,
            stats_addr: c.stats_addr,
            readiness_addr: c.readiness_addr,
            inbound_addr: c.inbound_addr,
            inbound_plaintext_addr: c.inbound_plaintext_addr,
            outbound_addr: c.outbound_addr,
            window_size: STREAM_WINDOW,
            connection_window_size: CONNECTION_WINDOW,
            frame_size: MAX_FRAME_SIZE,
            pool_max_streams_per_conn: c.pool_max_streams,
            pool_unused_release_timeout: c.pool_idle_timeout,
            packet_mark: c.packet_mark,
            num_worker_threads: c.cores,
            illegal_ports: &crate::config::OWN_PORTS,
            zring: ZringView {
                driver: format!("{:?}", c.driver).to_lowercase(),
                pin_cores: c.pin_cores,
                uring_entries: c.uring_entries,
                uring_setup: c.uring_setup.to_string(),
                buffer_size: c.buffer_size,
                connect_timeout: c.connect_timeout,
                listen_backlog: c.listen_backlog,
                log_format: format!("{:?}", c.log_format).to_lowercase(),
            },
        }
    }
}

/// One identity's certificates.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertsDump {
    pub identity: String,
    pub state: String,
    pub cert_chain: Vec<CertDump>,
    pub root_certs: Vec<CertDump>,
}

/// One certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertDump {
    /// Base64 of the PEM text.
    pub pem: String,
    /// Decimal.
    pub serial_number: String,
    /// RFC 3339, seconds, UTC.
    pub valid_from: String,
    pub expiration_time: String,
}

/// Dumps one DER certificate; an unparsable one keeps its PEM and says so in the other fields.
pub fn cert_dump(der: &[u8]) -> CertDump {
    let pem = identity::base64(identity::pem_certificate(der).as_bytes());
    let rfc3339 = |ts: i64| {
        time::OffsetDateTime::from_unix_timestamp(ts)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "unknown".into())
    };
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => CertDump {
            pem,
            serial_number: cert.tbs_certificate.serial.to_string(),
            valid_from: rfc3339(cert.validity().not_before.timestamp()),
            expiration_time: rfc3339(cert.validity().not_after.timestamp()),
        },
        Err(_) => CertDump {
            pem,
            serial_number: "unparsable".into(),
            valid_from: "unknown".into(),
            expiration_time: "unknown".into(),
        },
    }
}

/// Every identity `wanted` or held, sorted, with its state.
pub fn certificates(
    store: &CertStore,
    wanted: &BTreeSet<Identity>,
    failures: &BTreeMap<Identity, String>,
    now: SystemTime,
) -> Vec<CertsDump> {
    let roots: Vec<CertDump> = store.root_certs().iter().map(|r| cert_dump(r)).collect();
    let ids: BTreeSet<&Identity> = wanted.iter().chain(store.identities()).collect();
    ids.into_iter()
        .map(|id| match (store.get(id), failures.get(id)) {
            (Some(cert), _) => CertsDump {
                identity: id.to_string(),
                state: if cert.not_after() <= now {
                    "Unavailable: the certificate expired".into()
                } else {
                    "Available".into()
                },
                cert_chain: cert.chain().iter().map(|c| cert_dump(c)).collect(),
                root_certs: roots.clone(),
            },
            (None, Some(e)) => CertsDump {
                identity: id.to_string(),
                state: format!("Unavailable: {e}"),
                cert_chain: Vec::new(),
                root_certs: Vec::new(),
            },
            (None, None) => CertsDump {
                identity: id.to_string(),
                state: "Initializing".into(),
                cert_chain: Vec::new(),
                root_certs: Vec::new(),
            },
        })
        .collect()
}
