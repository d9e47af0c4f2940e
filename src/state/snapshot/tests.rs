//! Lookup tables for shared addresses: workloads ranked at one IP and per network, services
//! at one VIP per client namespace, CIDR VIPs by namespace, prefix and `canonical`.

use std::net::IpAddr;

use super::*;
use crate::state::{Cidr, NetworkAddress, SnapshotBuilder};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn w(uid: &str, ip_: &str, network: &str, node: &str, hbone: bool) -> Workload {
    Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "ns".into(),
        workload_ips: vec![ip(ip_)],
        network: network.into(),
        node: node.into(),
        protocol: if hbone {
            Protocol::Hbone
        } else {
            Protocol::Tcp
        },
        ..Workload::default()
    }
}

fn svc(ns: &str, name: &str, vips: &[&str], cidrs: &[&str], canonical: bool) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        hostname: format!("{name}.{ns}.svc").into(),
        vips: vips
            .iter()
            .map(|v| NetworkAddress::parse(v).unwrap())
            .collect(),
        cidr_vips: cidrs
            .iter()
            .map(|c| {
                let (network, cidr) = c.split_once('/').unwrap();
                NetworkCidr {
                    network: network.into(),
                    cidr: Cidr::parse(cidr).unwrap(),
                }
            })
            .collect(),
        canonical,
        ..Service::default()
    }
}

#[test]
fn workloads_at_one_ip_rank_and_split_by_network() {
    let mut b = SnapshotBuilder::new();
    // Added in the worst order: the ranking must not depend on it.
    for x in [
        w("zz-entry", "10.0.0.1", "", "n1", false),
        w("aa-entry-hbone", "10.0.0.1", "", "n2", true),
        w("Kubernetes//Pod/ns/b", "10.0.0.1", "", "n3", false),
        w("Kubernetes//Pod/ns/c", "10.0.0.1", "", "n4", true),
        w("Kubernetes//Pod/ns/remote", "10.0.0.1", "net2", "n5", false),
        w("Kubernetes//Pod/ns/self-twice", "10.0.0.2", "", "n1", false),
    ] {
        b.add_workload(x, vec![]);
    }
    let s = b.build().unwrap();
    let at: Vec<&str> = s
        .workloads_at(ip("10.0.0.1"))
        .iter()
        .map(|w| &*w.uid)
        .collect();
    assert_eq!(
        at,
        [
            "Kubernetes//Pod/ns/c",
            "Kubernetes//Pod/ns/b",
            "Kubernetes//Pod/ns/remote",
            "aa-entry-hbone",
            "zz-entry",
        ]
    );
    let uid = |w: Option<&Arc<Workload>>| w.map(|w| w.uid.to_string());
    assert_eq!(
        uid(s.workload_by_ip(ip("10.0.0.1"))).unwrap(),
        "Kubernetes//Pod/ns/c"
    );
    assert_eq!(
        uid(s.workload_by_addr("net2", ip("10.0.0.1"))).unwrap(),
        "Kubernetes//Pod/ns/remote"
    );
    assert_eq!(uid(s.workload_by_addr("net9", ip("10.0.0.1"))), None);
    // A node's own workload first; none there → the best; no node → the best.
    assert_eq!(
        uid(s.workload_near("n1", ip("10.0.0.1"))).unwrap(),
        "zz-entry"
    );
    assert_eq!(
        uid(s.workload_near("n9", ip("10.0.0.1"))).unwrap(),
        "Kubernetes//Pod/ns/c"
    );
    assert_eq!(
        uid(s.workload_near("", ip("10.0.0.1"))).unwrap(),
        "Kubernetes//Pod/ns/c"
    );
    assert_eq!(
        uid(s.workload_by_ip(ip("::ffff:10.0.0.2"))).unwrap(),
        "Kubernetes//Pod/ns/self-twice"
    );
}

#[test]
fn services_at_one_vip_and_cidr_vips_prefer_the_clients_namespace() {
    let mut b = SnapshotBuilder::new();
    for s in [
        svc("b", "two", &["/10.96.0.1"], &[], false),
        svc("a", "one", &["/10.96.0.1"], &[], false),
        svc("c", "canon", &["/10.96.0.1", "net2/10.96.0.1"], &[], true),
        svc("a", "wide", &[], &["/10.0.0.0/8"], false),
        svc("b", "narrow", &[], &["/10.1.0.0/16"], false),
        svc("c", "narrow-canon", &[], &["/10.1.0.0/16"], true),
        svc("d", "other-net", &[], &["net2/10.0.0.0/8"], false),
    ] {
        b.add_service(s);
    }
    let s = b.build().unwrap();
    let name = |x: Option<&Arc<Service>>| x.map(|s| s.name.to_string()).unwrap_or_default();
    let vip = ip("10.96.0.1");
    let at: Vec<String> = s.services_at_vip(vip).map(|s| s.name.to_string()).collect();
    assert_eq!(
        at,
        ["one", "two", "canon", "canon"],
        "by namespace/hostname, per network"
    );
    let cases = [
        // (network, ip, client namespace, expected)
        ("", "10.96.0.1", Some("b"), "two"),
        ("", "10.96.0.1", Some("a"), "one"),
        ("", "10.96.0.1", Some("z"), "canon"),
        ("", "10.96.0.1", None, "canon"),
        ("net2", "10.96.0.1", Some("a"), "canon"),
        ("net3", "10.96.0.1", None, ""),
        // CIDR: the client's namespace beats a longer prefix; then the longest prefix; then
        // canonical.
        ("", "10.1.2.3", Some("a"), "wide"),
        ("", "10.1.2.3", Some("b"), "narrow"),
        ("", "10.1.2.3", Some("z"), "narrow-canon"),
        ("", "10.2.0.1", Some("z"), "wide"),
        ("net2", "10.1.2.3", None, "other-net"),
        ("", "11.0.0.1", None, ""),
    ];
    for (network, addr, ns, want) in cases {
        assert_eq!(
            name(s.service_for(network, ip(addr), ns)),
            want,
            "{network}/{addr} for {ns:?}"
        );
    }
    // The compatibility lookup: single VIPs only, canonical first.
    assert_eq!(name(s.service_by_vip(vip)), "canon");
    assert_eq!(name(s.service_by_vip(ip("10.1.2.3"))), "");
}
