//! `SnapshotBuilder`: turns plain workloads, services and policies into a validated, indexed
//! `Snapshot`. Pure; runs on the control thread whenever a config source has a new view.
//!
//! Every rule a snapshot promises (see `state`'s module doc) is checked here, once, so every
//! config source gets the same checks and cores never re-validate. Objects sharing an address
//! are not a conflict: the indexes keep them all, best first (see `snapshot`). The first violation is
//! returned; its message names the object (workload uid, service `namespace/hostname`, policy
//! `namespace/name`), the field as the YAML spells it, and why.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use super::excerpt;
use super::names;
use super::policy::{Authorization, PolicyScope};
use super::service::{Endpoint, PortMap, Service};
use super::snapshot::{AtAddr, Snapshot, VipEntry, workload_rank};
use super::workload::{Destination, GatewayAddress, NamespacedHostname, NetworkMode, Workload};

/// Why a set of objects cannot become a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// One field of one object breaks a rule; `subject` names the object.
    #[error("{subject}: {field} {reason}")]
    Invalid {
        subject: String,
        field: &'static str,
        reason: String,
    },
    #[error("workload uid {0:?} is used by more than one workload")]
    DuplicateWorkloadUid(Arc<str>),
    #[error("service {0} is defined more than once")]
    DuplicateService(String),
    #[error("policy {0} is defined more than once")]
    DuplicatePolicy(String),
}

/// A workload that passed every rule it can break on its own, in the form a snapshot holds it:
/// IPs canonical, `services` filled from its memberships. Two `Arc`s, so a config source that
/// keeps its objects between builds (xDS, where one changed pod rebuilds the snapshot of every
/// pod) builds without copying or re-checking them, and consecutive snapshots share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedWorkload {
    pub workload: Arc<Workload>,
    /// The services it is an endpoint of, each with its port mapping.
    pub memberships: Arc<[(NamespacedHostname, PortMap)]>,
}

impl PreparedWorkload {
    /// Checks `workload` on its own (see [`SnapshotBuilder::check_workload`]) and prepares it.
    pub fn new(
        workload: Workload,
        memberships: Vec<(NamespacedHostname, PortMap)>,
    ) -> Result<PreparedWorkload, SnapshotError> {
        prepare_workload(workload, 0, memberships)
    }
}

fn prepare_workload(
    mut w: Workload,
    index: usize,
    memberships: Vec<(NamespacedHostname, PortMap)>,
) -> Result<PreparedWorkload, SnapshotError> {
    check_workload(&w, index, &memberships)?;
    for ip in &mut w.workload_ips {
        *ip = ip.to_canonical();
    }
    w.services = memberships.iter().map(|(k, _)| k.clone()).collect();
    Ok(PreparedWorkload {
        workload: Arc::new(w),
        memberships: memberships.into(),
    })
}

/// A workload as added: prepared already, or to be checked when the snapshot is built.
#[derive(Debug)]
enum Added {
    /// Boxed: a config file's workloads wait here only until `build`.
    Raw(Box<Workload>, Vec<(NamespacedHostname, PortMap)>),
    Prepared(PreparedWorkload),
}

/// Collects the objects of one snapshot; `build` validates and indexes them.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    workloads: Vec<Added>,
    services: Vec<Service>,
    policies: Vec<Authorization>,
}

impl SnapshotBuilder {
    pub fn new() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// Adds a workload and the services it is an endpoint of, each with the workload's own
    /// port mapping for it. The workload's `services` field is rebuilt from `memberships`.
    pub fn add_workload(
        &mut self,
        workload: Workload,
        memberships: Vec<(NamespacedHostname, PortMap)>,
    ) -> &mut Self {
        self.workloads
            .push(Added::Raw(Box::new(workload), memberships));
        self
    }

    /// Adds a workload prepared (and so checked) earlier.
    pub fn add_prepared_workload(&mut self, workload: PreparedWorkload) -> &mut Self {
        self.workloads.push(Added::Prepared(workload));
        self
    }

    /// Adds a service; its `endpoints` are replaced by those the workloads declare.
    pub fn add_service(&mut self, service: Service) -> &mut Self {
        self.services.push(service);
        self
    }

    pub fn add_policy(&mut self, policy: Authorization) -> &mut Self {
        self.policies.push(policy);
        self
    }

    /// The rules `build` holds one workload to on its own (names, IPs, gateways, port
    /// mappings), without the rules between objects (duplicates). Lets an xDS source reject
    /// one resource while the others apply.
    pub fn check_workload(
        workload: &Workload,
        memberships: &[(NamespacedHostname, PortMap)],
    ) -> Result<(), SnapshotError> {
        check_workload(workload, 0, memberships)
    }

    /// The rules `build` holds one service to on its own.
    pub fn check_service(service: &Service) -> Result<(), SnapshotError> {
        check_service(service)
    }

    /// The rules `build` holds one policy to on its own.
    pub fn check_policy(policy: &Authorization) -> Result<(), SnapshotError> {
        check_policy(policy)
    }

    /// Validates everything and builds the indexes. Memberships naming a service that is not
    /// (yet) defined are kept on the workload but produce no endpoint: with xDS, workloads can
    /// arrive before their services.
    pub fn build(self) -> Result<Snapshot, SnapshotError> {
        let n = self.workloads.len();
        // Sized up front: growing maps of 100,000 entries rehashes and copies them repeatedly.
        let mut snap = Snapshot {
            workloads: Vec::with_capacity(n),
            workloads_by_ip: HashMap::with_capacity(n),
            workload_by_uid: HashMap::with_capacity(n),
            ..Snapshot::default()
        };
        let mut memberships = Vec::with_capacity(self.workloads.len());
        for (index, added) in self.workloads.into_iter().enumerate() {
            let PreparedWorkload {
                workload: w,
                memberships: member_of,
            } = match added {
                Added::Raw(w, member_of) => prepare_workload(*w, index, member_of)?,
                Added::Prepared(p) => p,
            };
            match snap.workload_by_uid.entry(w.uid.clone()) {
                Entry::Occupied(_) => {
                    return Err(SnapshotError::DuplicateWorkloadUid(w.uid.clone()));
                }
                Entry::Vacant(v) => v.insert(w.clone()),
            };
            if w.network_mode != NetworkMode::HostNetwork {
                for ip in &w.workload_ips {
                    match snap.workloads_by_ip.entry(*ip) {
                        Entry::Vacant(v) => {
                            v.insert(AtAddr::One(w.clone()));
                        }
                        // The same IP listed twice on one workload is harmless.
                        Entry::Occupied(o) if o.get().as_slice().iter().any(|x| x.uid == w.uid) => {
                        }
                        Entry::Occupied(mut o) => o.get_mut().push(w.clone()),
                    }
                }
            }
            snap.workloads.push(w.clone());
            memberships.push((w, member_of));
        }

        for at in snap.workloads_by_ip.values_mut() {
            at.sort_by(|a, b| workload_rank(a).cmp(&workload_rank(b)));
        }

        let mut services = self.services;
        let mut by_key: HashMap<NamespacedHostname, usize> = HashMap::with_capacity(services.len());
        for (i, s) in services.iter_mut().enumerate() {
            check_service(s)?;
            if by_key.insert(s.key(), i).is_some() {
                return Err(SnapshotError::DuplicateService(excerpt(
                    &s.key().to_string(),
                )));
            }
            s.endpoints.clear();
            for vip in &mut s.vips {
                vip.address = vip.address.to_canonical();
            }
        }
        for (w, member_of) in memberships {
            for (key, ports) in member_of.iter() {
                if let Some(&i) = by_key.get(key) {
                    services[i].endpoints.push(Endpoint {
                        workload: w.clone(),
                        ports: ports.clone(),
                    });
                }
            }
        }
        for s in services {
            let s = Arc::new(s);
            for vip in &s.vips {
                let entry = VipEntry {
                    network: vip.network.clone(),
                    service: s.clone(),
                };
                match snap.services_by_vip.entry(vip.address) {
                    Entry::Vacant(v) => {
                        v.insert(AtAddr::One(entry));
                    }
                    // One service listing one VIP twice is harmless.
                    Entry::Occupied(o)
                        if o.get()
                            .as_slice()
                            .iter()
                            .any(|e| Arc::ptr_eq(&e.service, &s) && e.network == vip.network) => {}
                    Entry::Occupied(mut o) => o.get_mut().push(entry),
                }
            }
            for c in &s.cidr_vips {
                snap.cidr_vips.push((c.clone(), s.clone()));
            }
            snap.services_by_host
                .entry(s.hostname.clone())
                .or_default()
                .push(s.clone());
            snap.services.push(s);
        }
        // Deterministic whatever order the source listed them in (xDS holds them in a map).
        for at in snap.services_by_vip.values_mut() {
            at.sort_by(|a, b| {
                (&*a.service.namespace, &*a.service.hostname)
                    .cmp(&(&*b.service.namespace, &*b.service.hostname))
            });
        }
        snap.cidr_vips.sort_by(|(_, a), (_, b)| {
            (&*a.namespace, &*a.hostname).cmp(&(&*b.namespace, &*b.hostname))
        });

        for p in self.policies {
            check_policy(&p)?;
            let p = Arc::new(p);
            let key: Arc<str> = p.key().into();
            if snap.policy_by_key.insert(key.clone(), p.clone()).is_some() {
                return Err(SnapshotError::DuplicatePolicy(excerpt(&key)));
            }
            match p.scope {
                PolicyScope::Global => snap.global_policies.push(p.clone()),
                PolicyScope::Namespace => {
                    snap.namespace_policies
                        .entry(p.namespace.clone())
                        .or_default()
                        .push(p.clone());
                }
                PolicyScope::WorkloadSelector => {}
            }
            snap.policies.push(p);
        }
        Ok(snap)
    }
}

/// Names a workload in an error; formatted only when there is an error, so checking the
/// 100,000 valid workloads of a large push formats nothing.
struct WorkloadSubject<'a>(&'a str);

impl std::fmt::Display for WorkloadSubject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "workload {}", excerpt(self.0))
    }
}

fn invalid(
    subject: &dyn std::fmt::Display,
    field: &'static str,
    reason: impl Into<String>,
) -> SnapshotError {
    SnapshotError::Invalid {
        subject: subject.to_string(),
        field,
        reason: reason.into(),
    }
}

/// `field value is invalid: why`, with the value quoted and cut short.
fn bad_value(
    subject: &dyn std::fmt::Display,
    field: &'static str,
    value: &str,
    why: &str,
) -> SnapshotError {
    invalid(
        subject,
        field,
        format!("{} is invalid: {why}", excerpt(value)),
    )
}

fn check(
    subject: &dyn std::fmt::Display,
    field: &'static str,
    value: &str,
    rule: fn(&str) -> Result<(), &'static str>,
) -> Result<(), SnapshotError> {
    rule(value).map_err(|why| bad_value(subject, field, value, why))
}

fn check_workload(
    w: &Workload,
    index: usize,
    member_of: &[(NamespacedHostname, PortMap)],
) -> Result<(), SnapshotError> {
    if w.uid.is_empty() {
        let subject = format!("workload #{index} (name {})", excerpt(&w.name));
        return Err(invalid(
            &subject,
            "uid",
            "is empty: every workload needs a unique uid",
        ));
    }
    let subject = &WorkloadSubject(&w.uid);
    check(subject, "uid", &w.uid, names::check_text)?;
    check(subject, "namespace", &w.namespace, names::check_namespace)?;
    check(
        subject,
        "serviceAccount",
        &w.service_account,
        names::check_service_account,
    )?;
    check(
        subject,
        "trustDomain",
        &w.trust_domain,
        names::check_trust_domain,
    )?;
    check(subject, "network", &w.network, names::check_network)?;
    for (field, value) in [
        ("name", &w.name),
        ("workloadName", &w.workload_name),
        ("workloadType", &w.workload_type),
        ("canonicalName", &w.canonical_name),
        ("canonicalRevision", &w.canonical_revision),
        ("clusterId", &w.cluster_id),
        ("node", &w.node),
        ("hostname", &w.hostname),
        ("locality.region", &w.locality.region),
        ("locality.zone", &w.locality.zone),
        ("locality.subzone", &w.locality.subzone),
    ] {
        check(subject, field, value, names::check_text)?;
    }
    // No IP is kept: a workload addressed by hostname (DNS), or reachable only through its
    // network gateway. Routing refuses what it cannot reach, connection by connection.
    if let Some(g) = &w.waypoint {
        check_gateway(subject, "waypoint", g)?;
    }
    if let Some(g) = &w.network_gateway {
        check_gateway(subject, "networkGateway", g)?;
    }
    for key in &w.authorization_policies {
        let ok = key.split_once('/').is_some_and(|(ns, name)| {
            names::check_namespace(ns).is_ok() && names::check_object_name(name).is_ok()
        });
        if !ok {
            return Err(bad_value(
                subject,
                "authorizationPolicies",
                key,
                "expected \"namespace/name\"",
            ));
        }
    }
    for (key, ports) in member_of {
        check(subject, "services", &key.namespace, names::check_namespace)?;
        check(subject, "services", &key.hostname, names::check_hostname)?;
        for (&service_port, &target) in ports {
            if service_port == 0 || target == 0 {
                return Err(invalid(
                    subject,
                    "services",
                    format!(
                        "{}: port mapping {service_port} -> {target}: ports must be 1-65535",
                        excerpt(&key.to_string())
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_service(s: &Service) -> Result<(), SnapshotError> {
    let subject = &format!(
        "service {}",
        excerpt(&format!("{}/{}", s.namespace, s.hostname))
    );
    check(subject, "name", &s.name, names::check_object_name)?;
    check(subject, "namespace", &s.namespace, names::check_namespace)?;
    check(subject, "hostname", &s.hostname, names::check_hostname)?;
    // No VIP is kept: a headless service, reached through its endpoints' own addresses.
    for vip in &s.vips {
        check(subject, "vips", &vip.network, names::check_network)?;
    }
    for c in &s.cidr_vips {
        check(subject, "cidrVips", &c.network, names::check_network)?;
    }
    if s.ports.contains_key(&0) {
        return Err(invalid(
            subject,
            "ports",
            "maps service port 0: service ports must be 1-65535",
        ));
    }
    for san in &s.subject_alt_names {
        if san.is_empty() {
            return Err(invalid(
                subject,
                "subjectAltNames",
                "contains an empty name",
            ));
        }
        check(subject, "subjectAltNames", san, names::check_text)?;
    }
    if let Some(g) = &s.waypoint {
        check_gateway(subject, "waypoint", g)?;
    }
    Ok(())
}

fn check_gateway(
    subject: &dyn std::fmt::Display,
    field: &'static str,
    g: &GatewayAddress,
) -> Result<(), SnapshotError> {
    if g.hbone_mtls_port == 0 {
        return Err(invalid(
            subject,
            field,
            "has hboneMtlsPort 0: ports must be 1-65535",
        ));
    }
    match &g.destination {
        Destination::Address(a) => check(subject, field, &a.network, names::check_network),
        Destination::Hostname(h) => {
            check(subject, field, &h.namespace, names::check_namespace)?;
            check(subject, field, &h.hostname, names::check_hostname)
        }
    }
}

fn check_policy(p: &Authorization) -> Result<(), SnapshotError> {
    let subject = &format!("policy {}", excerpt(&p.key()));
    check(subject, "name", &p.name, names::check_object_name)?;
    check(subject, "namespace", &p.namespace, names::check_namespace)?;
    for m in p.matches() {
        if m.destination_ports.contains(&0) {
            return Err(invalid(
                subject,
                "destinationPorts",
                "contains 0: ports must be 1-65535",
            ));
        }
        if m.not_destination_ports.contains(&0) {
            return Err(invalid(
                subject,
                "notDestinationPorts",
                "contains 0: ports must be 1-65535",
            ));
        }
    }
    Ok(())
}
