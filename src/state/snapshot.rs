//! `Snapshot`: the immutable, indexed view of the mesh that cores read. Built only by
//! `SnapshotBuilder::build` (control thread); read concurrently by every core through
//! `Arc<Snapshot>`. Every lookup is a hash probe or a slice walk: nothing here allocates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::policy::Authorization;
use super::service::{PortMap, Service};
use super::workload::Workload;

/// The mesh at one instant. `Default` is the empty snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// In the order the source listed them, for stable dumps and counts.
    pub(super) workloads: Vec<Arc<Workload>>,
    pub(super) services: Vec<Arc<Service>>,
    pub(super) policies: Vec<Arc<Authorization>>,
    /// Canonical IP → workload; host-network workloads are not in it.
    pub(super) workload_by_ip: HashMap<IpAddr, Arc<Workload>>,
    pub(super) workload_by_uid: HashMap<Arc<str>, Arc<Workload>>,
    /// Canonical VIP → service.
    pub(super) service_by_vip: HashMap<IpAddr, Arc<Service>>,
    /// Hostname → the services (one per namespace, usually one) with that hostname. Keyed by
    /// hostname alone so a `(namespace, hostname)` lookup needs no key allocation.
    pub(super) services_by_host: HashMap<Arc<str>, Vec<Arc<Service>>>,
    /// `namespace/name` → policy.
    pub(super) policy_by_key: HashMap<Arc<str>, Arc<Authorization>>,
    /// Namespace → its `Namespace`-scoped policies.
    pub(super) namespace_policies: HashMap<Arc<str>, Vec<Arc<Authorization>>>,
    /// `Global`-scoped policies.
    pub(super) global_policies: Vec<Arc<Authorization>>,
}

impl Snapshot {
    /// No workloads, services or policies: what cores see before any config arrives.
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// The workload owning `ip` (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workload_by_ip.get(&ip.to_canonical())
    }

    pub fn workload_by_uid(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workload_by_uid.get(uid)
    }

    /// The service answering on VIP `ip` (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.service_by_vip.get(&ip.to_canonical())
    }

    /// The service keyed `namespace/hostname`.
    pub fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<&Arc<Service>> {
        self.services_by_hostname(hostname)
            .iter()
            .find(|s| &*s.namespace == namespace)
    }

    /// Every service with `hostname`, across namespaces.
    pub fn services_by_hostname(&self, hostname: &str) -> &[Arc<Service>] {
        self.services_by_host
            .get(hostname)
            .map_or(&[], Vec::as_slice)
    }

    /// A service's endpoints with their own port mappings, healthy or not, in a stable order.
    /// Routing filters with `Service::admits` and resolves ports with `Endpoint::target_port`.
    /// (The endpoints live on the service; the method is here so callers holding a snapshot
    /// need not know that.)
    pub fn service_endpoints<'a>(
        &'a self,
        service: &'a Service,
    ) -> impl Iterator<Item = (&'a Arc<Workload>, &'a PortMap)> + 'a {
        service.endpoints.iter().map(|e| (&e.workload, &e.ports))
    }

    /// The services `workload` is an endpoint of (those present in this snapshot).
    pub fn services_of<'a>(
        &'a self,
        workload: &'a Workload,
    ) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        workload
            .services
            .iter()
            .filter_map(|k| self.service_by_host(&k.namespace, &k.hostname))
    }

    /// The policy keyed `namespace/name`.
    pub fn policy(&self, key: &str) -> Option<&Arc<Authorization>> {
        self.policy_by_key.get(key)
    }

    /// Policies that apply to every workload.
    pub fn global_policies(&self) -> &[Arc<Authorization>] {
        &self.global_policies
    }

    /// `Namespace`-scoped policies of `namespace`.
    pub fn namespace_policies(&self, namespace: &str) -> &[Arc<Authorization>] {
        self.namespace_policies
            .get(namespace)
            .map_or(&[], Vec::as_slice)
    }

    pub fn workloads(&self) -> std::slice::Iter<'_, Arc<Workload>> {
        self.workloads.iter()
    }

    pub fn services(&self) -> std::slice::Iter<'_, Arc<Service>> {
        self.services.iter()
    }

    pub fn policies(&self) -> std::slice::Iter<'_, Arc<Authorization>> {
        self.policies.iter()
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.services.is_empty() && self.policies.is_empty()
    }
}
