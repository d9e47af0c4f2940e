//! `Snapshot`: the immutable, indexed view of the mesh that cores read. Built only by
//! `SnapshotBuilder::build` (control thread); read concurrently by every core through
//! `Arc<Snapshot>`. Every lookup is a hash probe, a walk of the few objects at one address, or
//! (CIDR VIPs, only when no single VIP matched) a walk of the ranges: nothing here allocates.
//!
//! Addresses are keyed by (network, IP). The index is by IP, each entry listing every object
//! at that IP on any network, best first, so a (network, IP) lookup is one probe plus a walk of
//! a list that almost always holds one object. "Best", deterministically:
//! - workloads at one IP (a pod whose IP was reused before istiod removed the old one, a
//!   WorkloadEntry naming a pod's IP, the same IP on two networks): Kubernetes pods first (they
//!   cannot be spoofed by another object), then HBONE ones (in the mesh, so more is known), then
//!   by uid, as ztunnel ranks them;
//! - services at one VIP (the same ServiceEntry address in several namespaces): the client's
//!   own namespace first, then a `canonical` one, then the first by `namespace/hostname`;
//!   CIDR VIPs: the client's namespace, then the longest prefix, then `canonical`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::policy::Authorization;
use super::service::{NetworkCidr, PortMap, Service};
use super::workload::{Protocol, Workload};

/// The objects at one address, best first. Nearly every address holds one object, kept inline
/// so the index costs no allocation per address.
#[derive(Debug, Clone)]
pub(super) enum AtAddr<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> AtAddr<T> {
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            AtAddr::One(t) => std::slice::from_ref(t),
            AtAddr::Many(v) => v,
        }
    }

    pub(super) fn push(&mut self, t: T) {
        // `Vec::new` does not allocate: the placeholder costs nothing.
        let list = match std::mem::replace(self, AtAddr::Many(Vec::new())) {
            AtAddr::One(first) => vec![first, t],
            AtAddr::Many(mut v) => {
                v.push(t);
                v
            }
        };
        *self = AtAddr::Many(list);
    }

    pub(super) fn sort_by(&mut self, cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) {
        if let AtAddr::Many(v) = self {
            v.sort_by(cmp);
        }
    }
}

/// A service answering on a VIP of a given network.
#[derive(Debug, Clone)]
pub(super) struct VipEntry {
    pub(super) network: Arc<str>,
    pub(super) service: Arc<Service>,
}

/// How workloads sharing an IP are ordered (smaller first): pods, then HBONE, then uid.
pub(super) fn workload_rank(w: &Workload) -> (bool, bool, &str) {
    (
        !w.uid.contains("//Pod/"),
        w.protocol != Protocol::Hbone,
        &w.uid,
    )
}

/// The mesh at one instant. `Default` is the empty snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// In the order the source listed them, for stable dumps and counts.
    pub(super) workloads: Vec<Arc<Workload>>,
    pub(super) services: Vec<Arc<Service>>,
    pub(super) policies: Vec<Arc<Authorization>>,
    /// Canonical IP → the workloads at it on every network, best first (see the module doc);
    /// host-network workloads and workloads without IPs are not in it.
    pub(super) workloads_by_ip: HashMap<IpAddr, AtAddr<Arc<Workload>>>,
    pub(super) workload_by_uid: HashMap<Arc<str>, Arc<Workload>>,
    /// Canonical VIP → the services on it on every network, by `namespace/hostname`.
    pub(super) services_by_vip: HashMap<IpAddr, AtAddr<VipEntry>>,
    /// Every CIDR VIP with its service, looked up only when no single VIP matched.
    pub(super) cidr_vips: Vec<(NetworkCidr, Arc<Service>)>,
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

    /// Every workload at `ip` on any network, best first (IPv4-mapped IPv6 is looked up as
    /// IPv4). Empty when none.
    pub fn workloads_at(&self, ip: IpAddr) -> &[Arc<Workload>] {
        self.workloads_by_ip
            .get(&ip.to_canonical())
            .map_or(&[], AtAddr::as_slice)
    }

    /// The best workload at `ip` on `network` (the empty string is the default network).
    pub fn workload_by_addr(&self, network: &str, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_at(ip)
            .iter()
            .find(|w| *w.network == *network)
    }

    /// The best workload at `ip` on any network: exact in a single-network mesh. Where the
    /// network is known, [`Snapshot::workload_by_addr`] is the lookup to use.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_at(ip).first()
    }

    /// The workload at `ip` that runs on `node` when there is one, else the best at `ip`: a
    /// node proxy's own pods (its sources, its inbound destinations) are on its node, whatever
    /// else claims their IP elsewhere.
    pub fn workload_near(&self, node: &str, ip: IpAddr) -> Option<&Arc<Workload>> {
        let at = self.workloads_at(ip);
        if node.is_empty() {
            return at.first();
        }
        at.iter().find(|w| *w.node == *node).or(at.first())
    }

    pub fn workload_by_uid(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workload_by_uid.get(uid)
    }

    /// The service on single VIP `ip`, on any network, for no client in particular (a
    /// `canonical` one first, then by `namespace/hostname`). CIDR VIPs are not consulted;
    /// routing uses [`Snapshot::service_for`].
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        best_service(self.services_at_vip(ip), None)
    }

    /// Every service on single VIP `ip`, by `namespace/hostname`: one entry per network the
    /// service has that VIP on (so a service with `ip` on two networks appears twice).
    pub fn services_at_vip(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Service>> + '_ {
        self.vip_entries(ip).iter().map(|e| &e.service)
    }

    fn vip_entries(&self, ip: IpAddr) -> &[VipEntry] {
        self.services_by_vip
            .get(&ip.to_canonical())
            .map_or(&[], AtAddr::as_slice)
    }

    /// The service a client in namespace `client_ns` reaches at `ip` on `network`: a single
    /// VIP first, else the CIDR VIPs containing `ip` (see the module doc for the preferences).
    pub fn service_for(
        &self,
        network: &str,
        ip: IpAddr,
        client_ns: Option<&str>,
    ) -> Option<&Arc<Service>> {
        let exact = self
            .vip_entries(ip)
            .iter()
            .filter(|e| *e.network == *network)
            .map(|e| &e.service);
        if let Some(s) = best_service(exact, client_ns) {
            return Some(s);
        }
        self.service_by_cidr(network, ip, client_ns)
    }

    /// The best CIDR-VIP service containing `ip` on `network` for a client in `client_ns`.
    pub fn service_by_cidr(
        &self,
        network: &str,
        ip: IpAddr,
        client_ns: Option<&str>,
    ) -> Option<&Arc<Service>> {
        let ip = ip.to_canonical();
        self.cidr_vips
            .iter()
            .filter(|(c, _)| *c.network == *network && c.cidr.contains(ip))
            // max_by_key keeps the last of equals; `rev` makes it the first in build order.
            .rev()
            .max_by_key(|(c, s)| {
                (
                    client_ns.is_some_and(|ns| *s.namespace == *ns),
                    c.cidr.prefix_len(),
                    s.canonical,
                )
            })
            .map(|(_, s)| s)
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

/// The client's namespace first, then a `canonical` service, then the first.
fn best_service<'a>(
    services: impl Iterator<Item = &'a Arc<Service>>,
    client_ns: Option<&str>,
) -> Option<&'a Arc<Service>> {
    let mut first = None;
    let mut canonical = None;
    for s in services {
        if client_ns.is_some_and(|ns| *s.namespace == *ns) {
            return Some(s);
        }
        if s.canonical && canonical.is_none() {
            canonical = Some(s);
        }
        first = first.or(Some(s));
    }
    canonical.or(first)
}

#[cfg(test)]
mod tests;
