//! Tests of `dns::resolve`: which names the mesh answers for which client, on snapshots built
//! in memory (pure, no sockets).

use super::*;
use crate::state::{NetworkAddress, PortMap, SnapshotBuilder};
use std::net::Ipv4Addr;

fn svc(ns: &str, host: &str, vips: &[&str]) -> Service {
    Service {
        name: host
            .split('.')
            .next()
            .unwrap()
            .replace('*', "wildcard")
            .into(),
        namespace: ns.into(),
        hostname: host.into(),
        vips: vips
            .iter()
            .map(|v| NetworkAddress::parse(v).unwrap())
            .collect(),
        ports: PortMap::from([(80, 8080)]),
        ..Service::default()
    }
}

fn client(ns: &str) -> Workload {
    Workload {
        uid: format!("Kubernetes//Pod/{ns}/client").into(),
        name: "client".into(),
        namespace: ns.into(),
        workload_ips: vec![Ipv4Addr::new(10, 244, 1, 8).into()],
        ..Workload::default()
    }
}

fn snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.add_workload(client("ns1"), Vec::new());
    b.add_service(svc(
        "ns1",
        "productpage.ns1.svc.cluster.local",
        &["/10.96.0.9", "/fd00::9"],
    ));
    let mut v4only = svc("ns2", "example.ns2.svc.cluster.local", &["/10.96.0.10"]);
    v4only.ip_families = Some(IpFamily::V4);
    b.add_service(v4only);
    b.add_service(svc("ns1", "*.wild.example", &["/240.240.0.1"]));
    b.add_service(svc("ns1", "www.google.com", &["/240.240.0.2"]));
    b.add_service(svc(
        "ns1",
        "far.ns1.svc.cluster.local",
        &["net2/10.96.0.11"],
    ));
    // One hostname, three namespaces: ns3's is canonical, ns4 is preferred.
    b.add_service(svc("ns2", "shared.example", &["/240.240.1.2"]));
    let mut canonical = svc("ns3", "shared.example", &["/240.240.1.3"]);
    canonical.canonical = true;
    b.add_service(canonical);
    b.add_service(svc("ns4", "shared.example", &["/240.240.1.4"]));
    b.add_service(svc("ns2", "other.example", &["/240.240.2.2"]));
    b.add_service(svc("ns4", "other.example", &["/240.240.2.4"]));
    b.build().unwrap()
}

/// The records of `name`/`qtype` for a client in ns1, as text: `owner A ip` / `owner CNAME t`.
fn ask(s: &Snapshot, name: &str, qtype: u16, settings: &Settings) -> Option<Vec<String>> {
    let q = Name::from_dotted(name).unwrap();
    match lookup(s, &client("ns1"), &q, qtype, settings, 0) {
        Lookup::Forward => None,
        Lookup::Answer(records) => Some(
            records
                .iter()
                .map(|r| match r {
                    Record::Cname { owner, target } => {
                        format!("{} CNAME {}", owner.display(), target.display())
                    }
                    Record::Addr { owner, ip } => format!("{} {}", owner.display(), ip),
                })
                .collect(),
        ),
    }
}

#[test]
fn every_form_a_pod_may_ask() {
    let s = snapshot();
    let d = Settings::default();
    let a = |name: &str| ask(&s, name, TYPE_A, &d);
    for name in [
        "productpage.ns1.svc.cluster.local",
        "productpage",
        "productpage.ns1",
        "productpage.ns1.svc",
    ] {
        assert_eq!(a(name), Some(vec![format!("{name}. 10.96.0.9")]), "{name}");
    }
    // What glibc asks after appending a search domain to a name that already had a
    // namespace: a CNAME to the stripped name, whose address records follow.
    assert_eq!(
        a("productpage.ns1.ns1.svc.cluster.local"),
        Some(vec![
            "productpage.ns1.ns1.svc.cluster.local. CNAME productpage.ns1.".into(),
            "productpage.ns1. 10.96.0.9".into(),
        ])
    );
    // Case is kept in the answer, ignored in the match.
    assert_eq!(
        a("ProductPage.NS1.svc.cluster.local"),
        Some(vec!["ProductPage.NS1.svc.cluster.local. 10.96.0.9".into()])
    );
    // Another namespace, by its own name.
    assert_eq!(
        a("example.ns2"),
        Some(vec!["example.ns2. 10.96.0.10".into()])
    );
    // Not the mesh's: forwarded. So are other types, and names no hostname can be.
    assert_eq!(a("nothere.ns1.svc.cluster.local"), None);
    assert_eq!(
        a("example"),
        None,
        "short names expand to the client's namespace only"
    );
    assert_eq!(ask(&s, "productpage", 16, &d), None, "TXT");
}

#[test]
fn families_networks_and_service_entries() {
    let s = snapshot();
    let d = Settings::default();
    assert_eq!(
        ask(&s, "productpage", TYPE_AAAA, &d),
        Some(vec!["productpage. fd00::9".into()])
    );
    // Found but IPv4-only: an empty answer (NOERROR), not a forward.
    assert_eq!(ask(&s, "example.ns2", TYPE_AAAA, &d), Some(vec![]));
    // The VIP is on another network than the client.
    assert_eq!(ask(&s, "far", TYPE_A, &d), Some(vec![]));
    // ServiceEntry hosts, exact and wildcard; no CNAME through a wildcard.
    assert_eq!(
        ask(&s, "www.google.com", TYPE_A, &d),
        Some(vec!["www.google.com. 240.240.0.2".into()])
    );
    assert_eq!(
        ask(&s, "api.wild.example", TYPE_A, &d),
        Some(vec!["api.wild.example. 240.240.0.1".into()])
    );
    assert_eq!(
        ask(&s, "a.b.wild.example", TYPE_A, &d),
        Some(vec!["a.b.wild.example. 240.240.0.1".into()])
    );
    assert_eq!(ask(&s, "wild.example", TYPE_A, &d), None);
    assert_eq!(
        ask(&s, "www.google.com.ns1.svc.cluster.local", TYPE_A, &d),
        Some(vec![
            "www.google.com.ns1.svc.cluster.local. CNAME www.google.com.".into(),
            "www.google.com. 240.240.0.2".into(),
        ])
    );
    assert_eq!(
        ask(&s, "x.wild.example.svc.cluster.local", TYPE_A, &d),
        Some(vec!["x.wild.example.svc.cluster.local. 240.240.0.1".into()]),
        "through a wildcard: no CNAME, the asked name answers"
    );
}

#[test]
fn namespace_preference() {
    let s = snapshot();
    let mut d = Settings::default();
    assert_eq!(
        ask(&s, "shared.example", TYPE_A, &d),
        Some(vec!["shared.example. 240.240.1.3".into()]),
        "canonical beats first and preferred"
    );
    assert_eq!(
        ask(&s, "other.example", TYPE_A, &d),
        Some(vec!["other.example. 240.240.2.2".into()]),
        "the first without a preference"
    );
    d.preferred_namespace = Some("ns4".into());
    assert_eq!(
        ask(&s, "other.example", TYPE_A, &d),
        Some(vec!["other.example. 240.240.2.4".into()])
    );
    assert_eq!(
        ask(&s, "shared.example", TYPE_A, &d),
        Some(vec!["shared.example. 240.240.1.3".into()])
    );
}

#[test]
fn addresses_rotate() {
    let mut b = SnapshotBuilder::new();
    b.add_workload(client("ns1"), Vec::new());
    b.add_service(svc("ns1", "multi.example", &["/240.0.0.1", "/240.0.0.2"]));
    let s = b.build().unwrap();
    let q = Name::from_dotted("multi.example").unwrap();
    let first = |r| match lookup(&s, &client("ns1"), &q, TYPE_A, &Settings::default(), r) {
        Lookup::Answer(recs) => match &recs[0] {
            Record::Addr { ip, .. } => *ip,
            other => panic!("{other:?}"),
        },
        Lookup::Forward => panic!("forwarded"),
    };
    assert_ne!(first(0), first(1));
}

#[test]
fn alias_expansion() {
    let c = client("ns1");
    let d = Settings::default();
    let texts = |name: &str| -> Vec<(String, Option<usize>)> {
        aliases(name, &c, &d)
            .into_iter()
            .map(|a| (a.text, a.stripped))
            .collect()
    };
    assert_eq!(
        texts("web-0.web"),
        vec![
            ("web-0.web".into(), None),
            ("web-0.web.svc.cluster.local".into(), None),
            ("web-0.web.ns1.svc.cluster.local".into(), None),
        ]
    );
    assert_eq!(
        wildcards("a.b.c").collect::<Vec<_>>(),
        ["a.b.c", "*.b.c", "*.c"]
    );
}

/// Headless services (no VIP) answer their endpoints' addresses, and a StatefulSet pod's
/// name answers that pod's.
#[test]
fn headless_services_and_statefulset_pods() {
    let mut b = SnapshotBuilder::new();
    b.add_workload(client("ns1"), Vec::new());
    b.add_service(svc("ns1", "web.ns1.svc.cluster.local", &[]));
    for (i, ip) in [(0, "10.244.1.20"), (1, "10.244.1.21")] {
        let w = Workload {
            uid: format!("Kubernetes//Pod/ns1/web-{i}").into(),
            name: format!("web-{i}").into(),
            namespace: "ns1".into(),
            workload_ips: vec![ip.parse().unwrap()],
            ..Workload::default()
        };
        let key = crate::state::NamespacedHostname {
            namespace: "ns1".into(),
            hostname: "web.ns1.svc.cluster.local".into(),
        };
        b.add_workload(w, vec![(key, PortMap::new())]);
    }
    let s = b.build().unwrap();
    let d = Settings::default();
    let mut all = ask(&s, "web", TYPE_A, &d).unwrap();
    all.sort();
    assert_eq!(all, ["web. 10.244.1.20", "web. 10.244.1.21"]);
    assert_eq!(
        ask(&s, "web-1.web.ns1.svc.cluster.local", TYPE_A, &d),
        Some(vec!["web-1.web.ns1.svc.cluster.local. 10.244.1.21".into()])
    );
    assert_eq!(
        ask(&s, "web-1.web", TYPE_A, &d),
        Some(vec!["web-1.web. 10.244.1.21".into()])
    );
}

/// A service visible only in its own namespace answers its own namespace's clients and does
/// not exist for others (their query is forwarded, as for any name the mesh does not know).
#[test]
fn namespace_visible_services_answer_only_their_namespace() {
    let mut b = SnapshotBuilder::new();
    b.add_workload(client("ns1"), Vec::new());
    let mut private = svc("ns2", "db.ns2.svc.cluster.local", &["/10.96.0.30"]);
    private.visibility = crate::state::Visibility::Namespace;
    b.add_service(private);
    b.add_service(svc("ns2", "web.ns2.svc.cluster.local", &["/10.96.0.31"]));
    let s = b.build().unwrap();
    let d = Settings::default();
    assert_eq!(ask(&s, "db.ns2.svc.cluster.local", TYPE_A, &d), None);
    assert_eq!(
        ask(&s, "web.ns2.svc.cluster.local", TYPE_A, &d),
        Some(vec!["web.ns2.svc.cluster.local. 10.96.0.31".into()])
    );
    // The service's own namespace still sees it.
    let q = Name::from_dotted("db.ns2.svc.cluster.local").unwrap();
    let mut own = client("ns2");
    own.uid = "Kubernetes//Pod/ns2/client".into();
    assert!(matches!(
        lookup(&s, &own, &q, TYPE_A, &d, 0),
        Lookup::Answer(r) if !r.is_empty()
    ));
}

/// `IPV6_ENABLED=false`: a dual-stack service still answers A with its IPv4 VIP, and AAAA with
/// no records (NOERROR: the name exists); a name the mesh does not know is still forwarded.
#[test]
fn ipv6_disabled_answers_no_aaaa_for_mesh_names() {
    let mut b = SnapshotBuilder::new();
    b.add_workload(client("ns1"), Vec::new());
    b.add_service(svc(
        "ns1",
        "dual.ns1.svc.cluster.local",
        &["/10.96.0.40", "/fd00:96::40"],
    ));
    let s = b.build().unwrap();
    let on = Settings::default();
    let name = "dual.ns1.svc.cluster.local";
    assert_eq!(
        ask(&s, name, TYPE_AAAA, &on),
        Some(vec![format!("{name}. fd00:96::40")])
    );
    let off = Settings {
        ipv6: false,
        ..Settings::default()
    };
    assert_eq!(ask(&s, name, TYPE_AAAA, &off), Some(Vec::new()));
    assert_eq!(
        ask(&s, "dual", TYPE_AAAA, &off),
        Some(Vec::new()),
        "short form too"
    );
    assert_eq!(
        ask(&s, name, TYPE_A, &off),
        Some(vec![format!("{name}. 10.96.0.40")])
    );
    assert_eq!(ask(&s, "elsewhere.example", TYPE_AAAA, &off), None);
}
