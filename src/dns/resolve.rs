//! What the proxy answers itself: A and AAAA questions for names the mesh knows (services by
//! hostname, ServiceEntry hosts and their wildcards, headless services' endpoints, StatefulSet
//! pods under their headless service), seen from one client workload. Pure: a function of the
//! snapshot, the client and the question; runs on the core that received the query.
//!
//! The matching follows ztunnel's `src/dns/server.rs` (facts, not code):
//! - the candidates ("aliases") are the name asked, its Kubernetes expansions (`svc` →
//!   `svc.<client ns>.svc.<domain>`; `svc.ns` → `svc.ns.svc.<domain>` and, for a pod under a
//!   subdomain, `svc.ns.<client ns>.svc.<domain>`; `svc.ns.svc` → `svc.ns.svc.<domain>`; …),
//!   and the same for the name with one of the client's search domains stripped
//!   (`<client ns>.svc.<domain>`, `svc.<domain>`, `<domain>`: the in-pod search list, which
//!   depends on the client's namespace);
//! - each candidate is tried as is, then as wildcards of decreasing specificity
//!   (`a.b.c` → `*.b.c` → `*.c`);
//! - a hostname may name services in several namespaces: the client's namespace wins, then a
//!   canonical one, then the preferred namespace (`PREFERED_SERVICE_NAMESPACE`), then the
//!   first; services without a VIP count only when they are Kubernetes headless services (a
//!   `.svc.<domain>` hostname), the rest are left to the upstream resolvers;
//! - a found service answers even with no address of the asked family (NOERROR, no records:
//!   the name exists); a service whose `ipFamilies` exclude the family answers likewise, and
//!   so does every found name asked for AAAA when `IPV6_ENABLED=false`;
//! - when the name matched only after a search domain was stripped, and not through a
//!   wildcard, the answer is a CNAME from the asked name to the stripped one, and the address
//!   records are the stripped name's;
//! - VIPs are those on the client's network; a headless service answers the first address of
//!   the family of each endpoint.
//!
//! Where zring differs: a headless service answers only the endpoints its health policy
//! admits (as Kubernetes' own DNS publishes only ready endpoints; ztunnel answers all), and a
//! StatefulSet pod name (`<pod>.<headless svc>.<ns>.svc.<domain>`, which ztunnel forwards)
//! answers that pod's addresses. A service visible only in its own namespace
//! (`Service.visibility`) is not answered to other namespaces' clients.

use std::net::IpAddr;
use std::sync::Arc;

use super::wire::{Name, Record, TYPE_A, TYPE_AAAA};
use crate::state::{IpFamily, Service, Snapshot, Workload};

/// Resolution settings from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's DNS domain (`CLUSTER_DOMAIN`, `cluster.local`), lowercase, no dots around.
    pub domain: String,
    /// The namespace preferred when a hostname names services in several namespaces and none
    /// is the client's or canonical (`PREFERED_SERVICE_NAMESPACE`).
    pub preferred_namespace: Option<String>,
    /// `IPV6_ENABLED`: off, an AAAA question for a name the mesh knows is answered with no
    /// records (the name exists), as ztunnel answers it.
    pub ipv6: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            domain: "cluster.local".into(),
            preferred_namespace: None,
            ipv6: true,
        }
    }
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The mesh knows the name: answer authoritatively with these records (maybe none).
    Answer(Vec<Record>),
    /// Not the mesh's: ask the upstream resolvers.
    Forward,
}

/// One candidate name: its lowercase text and, when a search domain was stripped to find it,
/// how many leading labels of the question it kept.
struct Alias {
    text: String,
    stripped: Option<usize>,
}

/// What a question resolves to, before the records are made.
enum Found<'a> {
    Service(&'a Arc<Service>),
    Pod(&'a Arc<Workload>),
}

/// Resolves `qname`/`qtype` for `client`. Only A and AAAA questions in class IN are the
/// mesh's; everything else, and names with characters no mesh hostname has, is forwarded.
/// `random` rotates the addresses (clients mostly take the first).
pub fn lookup(
    snapshot: &Snapshot,
    client: &Workload,
    qname: &Name,
    qtype: u16,
    settings: &Settings,
    random: u64,
) -> Lookup {
    if qtype != TYPE_A && qtype != TYPE_AAAA {
        return Lookup::Forward;
    }
    let Some(key) = qname.lookup_key() else {
        return Lookup::Forward;
    };
    if key.is_empty() {
        return Lookup::Forward;
    }
    for alias in aliases(&key, client, settings) {
        for (i, candidate) in wildcards(&alias.text).enumerate() {
            let found = match find_service(snapshot, client, &candidate, settings) {
                Some(s) => Found::Service(s),
                None if i == 0 => match find_pod(snapshot, client, &candidate, settings) {
                    Some(w) => Found::Pod(w),
                    None => continue,
                },
                None => continue,
            };
            let mut records = Vec::new();
            let mut owner = qname.clone();
            if let Some(kept) = alias.stripped
                && i == 0
                && let Some(stripped) = leading_labels(qname, kept)
            {
                records.push(Record::Cname {
                    owner: qname.clone(),
                    target: stripped.clone(),
                });
                owner = stripped;
            }
            let addrs = match found {
                // IPv6 turned off: the name exists, with no address of this family.
                _ if qtype == TYPE_AAAA && !settings.ipv6 => Vec::new(),
                Found::Service(s) => service_addrs(snapshot, client, s, qtype),
                Found::Pod(w) => w
                    .workload_ips
                    .iter()
                    .copied()
                    .filter(|ip| family_of(*ip) == qtype)
                    .collect(),
            };
            if addrs.is_empty() {
                // The name exists without addresses of this family: no records at all, not
                // even the CNAME (ztunnel answers an empty set).
                return Lookup::Answer(Vec::new());
            }
            let rotate = (random % addrs.len() as u64) as usize;
            for k in 0..addrs.len() {
                records.push(Record::Addr {
                    owner: owner.clone(),
                    ip: addrs[(k + rotate) % addrs.len()],
                });
            }
            return Lookup::Answer(records);
        }
    }
    Lookup::Forward
}

fn family_of(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => TYPE_A,
        IpAddr::V6(_) => TYPE_AAAA,
    }
}

/// The candidate names for `key` (lowercase dotted) asked by `client`, without duplicates, in
/// the order they are tried.
fn aliases(key: &str, client: &Workload, settings: &Settings) -> Vec<Alias> {
    let mut out: Vec<Alias> = Vec::with_capacity(8);
    let mut add = |text: String, stripped: Option<usize>| {
        if !out.iter().any(|a| a.text == text) {
            out.push(Alias { text, stripped });
        }
    };
    add(key.to_owned(), None);
    let domain = &settings.domain;
    let ns = &*client.namespace;
    for fqdn in kube_fqdns(key, ns, domain) {
        add(fqdn, None);
    }
    let search = [
        format!("{ns}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.clone(),
    ];
    for suffix in &search {
        let Some(stripped) = key
            .strip_suffix(suffix.as_str())
            .and_then(|s| s.strip_suffix('.'))
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let kept = stripped.split('.').count();
        add(stripped.to_owned(), Some(kept));
        for fqdn in kube_fqdns(stripped, ns, domain) {
            add(fqdn, Some(kept));
        }
    }
    out
}

/// The Kubernetes FQDNs a relative name may stand for (see the module doc).
fn kube_fqdns(name: &str, ns: &str, domain: &str) -> Vec<String> {
    let labels = name.split('.').count();
    let svc_tail = name.ends_with(".svc");
    match labels {
        1 => vec![format!("{name}.{ns}.svc.{domain}")],
        2 => vec![
            format!("{name}.svc.{domain}"),
            format!("{name}.{ns}.svc.{domain}"),
        ],
        3 if svc_tail => vec![format!("{name}.{domain}"), format!("{name}.svc.{domain}")],
        3 => vec![format!("{name}.svc.{domain}")],
        4 if svc_tail => vec![format!("{name}.{domain}")],
        _ => Vec::new(),
    }
}

/// `name` itself, then its wildcards of decreasing specificity.
fn wildcards(name: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = Some(name);
    let mut first = true;
    std::iter::from_fn(move || {
        if std::mem::take(&mut first) {
            return Some(name.to_owned());
        }
        let (_, tail) = rest?.split_once('.')?;
        rest = Some(tail);
        Some(format!("*.{tail}"))
    })
}

/// The first `n` labels of `name`, as asked (case kept).
fn leading_labels(name: &Name, n: usize) -> Option<Name> {
    let text: Vec<&str> = name
        .labels()
        .take(n)
        .map(|l| std::str::from_utf8(l).ok())
        .collect::<Option<_>>()?;
    Name::from_dotted(&text.join("."))
}

fn is_headless_kube(service: &Service, domain: &str) -> bool {
    service.vips.is_empty()
        && service
            .hostname
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with(".svc."))
}

/// The service `hostname` names for `client`, by ztunnel's preference.
fn find_service<'a>(
    snapshot: &'a Snapshot,
    client: &Workload,
    hostname: &str,
    settings: &Settings,
) -> Option<&'a Arc<Service>> {
    let mut best: Option<(&Arc<Service>, u8)> = None;
    for s in snapshot.services_by_hostname(hostname) {
        if s.vips.is_empty() && !is_headless_kube(s, &settings.domain) {
            continue;
        }
        // A service visible only in its own namespace (`Service.visibility`, istiod's
        // `exportTo: .`) does not exist for other namespaces' clients.
        if !s.visible_to(&client.namespace) {
            continue;
        }
        // Rank: 3 client's namespace (final), 2 canonical (a later canonical replaces an
        // earlier), 1 preferred namespace (unless a canonical one was seen), 0 the first.
        let rank = if *s.namespace == *client.namespace {
            return Some(s);
        } else if s.canonical {
            2
        } else if settings.preferred_namespace.as_deref() == Some(&*s.namespace) {
            1
        } else {
            0
        };
        match best {
            None => best = Some((s, rank)),
            Some((_, b)) if rank == 2 || (rank == 1 && b == 0) => best = Some((s, rank)),
            Some(_) => {}
        }
    }
    best.map(|(s, _)| s)
}

/// A StatefulSet pod named as `<pod>.<headless service hostname>`: the endpoint of that
/// headless service whose pod name is `<pod>`.
fn find_pod<'a>(
    snapshot: &'a Snapshot,
    client: &Workload,
    name: &str,
    settings: &Settings,
) -> Option<&'a Arc<Workload>> {
    let (pod, rest) = name.split_once('.')?;
    if pod == "*" {
        return None;
    }
    let service = find_service(snapshot, client, rest, settings)?;
    if !is_headless_kube(service, &settings.domain) {
        return None;
    }
    snapshot
        .service_endpoints(service)
        .map(|(w, _)| w)
        .find(|w| w.name.eq_ignore_ascii_case(pod) && service.admits(w.status))
}

/// The addresses of `service` of `qtype`'s family that `client` may use.
fn service_addrs(
    snapshot: &Snapshot,
    client: &Workload,
    service: &Service,
    qtype: u16,
) -> Vec<IpAddr> {
    let allowed = match service.ip_families {
        Some(IpFamily::V4) => qtype == TYPE_A,
        Some(IpFamily::V6) => qtype == TYPE_AAAA,
        Some(IpFamily::Dual) | None => true,
    };
    if !allowed {
        return Vec::new();
    }
    if service.vips.is_empty() {
        return snapshot
            .service_endpoints(service)
            .filter(|(w, _)| service.admits(w.status))
            .filter_map(|(w, _)| {
                w.workload_ips
                    .iter()
                    .copied()
                    .find(|ip| family_of(*ip) == qtype)
            })
            .collect();
    }
    service
        .vips
        .iter()
        .filter(|v| family_of(v.address) == qtype && *v.network == *client.network)
        .map(|v| v.address)
        .collect()
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
