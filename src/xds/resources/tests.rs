//! Resource map tables: adds, replacements and removals, per-resource rejection (decode,
//! type, name, conversion) with the previous version kept, and shared addresses kept and
//! ranked rather than rejected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use prost::Message;
use prost_types::Any;

use super::*;
use crate::xds::proto::{ADDRESS_TYPE, AUTHORIZATION_TYPE, security as ps, workload as pw};

pub(crate) fn workload(uid: &str, ip: [u8; 4]) -> pw::Workload {
    pw::Workload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "default".into(),
        addresses: vec![ip.to_vec()],
        node: "node-a".into(),
        ..Default::default()
    }
}

pub(crate) fn address_resource(name: &str, version: &str, a: pw::Address) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(Any {
            type_url: ADDRESS_TYPE.into(),
            value: a.encode_to_vec(),
        }),
        ..Default::default()
    }
}

pub(crate) fn workload_resource(w: pw::Workload) -> Resource {
    let name = w.uid.clone();
    address_resource(
        &name,
        "v1",
        pw::Address {
            r#type: Some(pw::address::Type::Workload(w)),
        },
    )
}

fn service_resource(name: &str, vip: [u8; 4]) -> Resource {
    let s = pw::Service {
        name: name.into(),
        namespace: "default".into(),
        hostname: format!("{name}.default.svc.cluster.local"),
        addresses: vec![pw::NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
            length: None,
        }],
        ..Default::default()
    };
    address_resource(
        &format!("default/{name}.default.svc.cluster.local"),
        "v1",
        pw::Address {
            r#type: Some(pw::address::Type::Service(s)),
        },
    )
}

fn policy_resource(name: &str) -> Resource {
    let p = ps::Authorization {
        name: name.into(),
        namespace: "default".into(),
        scope: ps::Scope::Namespace as i32,
        ..Default::default()
    };
    Resource {
        name: format!("default/{name}"),
        version: "p1".into(),
        resource: Some(Any {
            type_url: AUTHORIZATION_TYPE.into(),
            value: p.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn uids(s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = s.workloads().map(|w| w.uid.to_string()).collect();
    v.sort();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn adds_replaces_and_removes() {
    let mut set = ResourceSet::new();
    let a = set.apply(
        Kind::Address,
        vec![
            workload_resource(workload("w1", [10, 0, 0, 1])),
            workload_resource(workload("w2", [10, 0, 0, 2])),
            service_resource("svc", [10, 96, 0, 1]),
        ],
        vec![],
    );
    assert!(a.rejected.is_empty(), "{:?}", a.rejected);
    assert_eq!((a.updated, a.removed), (3, 0));
    let s = a.snapshot.unwrap();
    assert_eq!(uids(&s), ["w1", "w2"]);
    assert!(s.service_by_vip(ip("10.96.0.1")).is_some());

    let p = set.apply(
        Kind::Authorization,
        vec![policy_resource("deny-all")],
        vec![],
    );
    assert_eq!(p.snapshot.unwrap().policy_count(), 1);
    assert_eq!(
        set.versions(Kind::Authorization),
        HashMap::from([("default/deny-all".to_string(), "p1".to_string())])
    );

    // A replacement moves w1 to a new IP; a removal drops w2.
    let a = set.apply(
        Kind::Address,
        vec![workload_resource(workload("w1", [10, 0, 0, 9]))],
        vec!["w2".into()],
    );
    let s = a.snapshot.unwrap();
    assert_eq!((a.updated, a.removed), (1, 1));
    assert_eq!(uids(&s), ["w1"]);
    assert!(s.workload_by_ip(ip("10.0.0.9")).is_some());
    assert!(s.workload_by_ip(ip("10.0.0.1")).is_none());
    assert_eq!(s.policy_count(), 1, "other types are untouched");

    // Removing what is not there changes nothing: nothing to publish.
    let a = set.apply(Kind::Address, vec![], vec!["never-seen".into()]);
    assert!(a.snapshot.is_none() && a.rejected.is_empty());
    assert_eq!(set.len(Kind::Address), 2);
}

#[test]
fn bad_resources_are_rejected_while_the_rest_apply() {
    let mut set = ResourceSet::new();
    let mut wrong_type = workload_resource(workload("wrong-type", [10, 0, 0, 3]));
    wrong_type.resource.as_mut().unwrap().type_url = AUTHORIZATION_TYPE.into();
    let mut garbage = workload_resource(workload("garbage", [10, 0, 0, 4]));
    garbage.resource.as_mut().unwrap().value = vec![0xff; 9];
    let mut no_payload = workload_resource(workload("empty", [10, 0, 0, 5]));
    no_payload.resource = None;
    let mut misnamed = workload_resource(workload("real-uid", [10, 0, 0, 6]));
    misnamed.name = "other-name".into();
    let mut bad_ip = workload("bad-ip", [10, 0, 0, 7]);
    bad_ip.addresses = vec![vec![1, 2, 3]];
    let mut long_version = workload_resource(workload("long", [10, 0, 0, 8]));
    long_version.version = "v".repeat(MAX_TEXT_BYTES + 1);

    let a = set.apply(
        Kind::Address,
        vec![
            workload_resource(workload("good", [10, 0, 0, 1])),
            wrong_type,
            garbage,
            no_payload,
            misnamed,
            workload_resource(bad_ip),
            long_version,
            workload_resource(workload("good", [10, 0, 0, 2])),
        ],
        vec![],
    );
    let mut why: Vec<(String, String)> = a
        .rejected
        .iter()
        .map(|r| (r.name.clone(), format!("{:?}", r.error)))
        .collect();
    why.sort();
    let kinds: Vec<&str> = why
        .iter()
        .map(|(_, e)| e.split(['(', ' ', '{']).next().unwrap())
        .collect();
    assert_eq!(
        why.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "bad-ip",
            "empty",
            "garbage",
            "good",
            "long",
            "other-name",
            "wrong-type"
        ]
    );
    assert_eq!(
        kinds,
        [
            "Convert",
            "NoPayload",
            "Decode",
            "Repeated",
            "TooLong",
            "NameMismatch",
            "WrongType"
        ]
    );
    assert_eq!(uids(&a.snapshot.unwrap()), ["good"]);
}

#[test]
fn a_rejected_update_keeps_the_previous_version() {
    let mut set = ResourceSet::new();
    set.apply(
        Kind::Address,
        vec![workload_resource(workload("w1", [10, 0, 0, 1]))],
        vec![],
    );
    let mut broken = workload("w1", [10, 0, 0, 2]);
    broken.tunnel_protocol = 42;
    let a = set.apply(Kind::Address, vec![workload_resource(broken)], vec![]);
    assert_eq!(a.rejected.len(), 1);
    assert!(a.snapshot.is_none(), "nothing changed");
    let s = set.build().unwrap();
    assert!(s.workload_by_ip(ip("10.0.0.1")).is_some());
}

fn service_in(namespace: &str, name: &str, vip: [u8; 4], canonical: bool) -> Resource {
    let hostname = format!("{name}.{namespace}.svc.cluster.local");
    let s = pw::Service {
        name: name.into(),
        namespace: namespace.into(),
        hostname: hostname.clone(),
        addresses: vec![pw::NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
            length: None,
        }],
        canonical,
        ..Default::default()
    };
    address_resource(
        &format!("{namespace}/{hostname}"),
        "v1",
        pw::Address {
            r#type: Some(pw::address::Type::Service(s)),
        },
    )
}

/// What once conflicted (and was NACKed) is all kept: several workloads on one IP (a pod's IP
/// reused before istiod removed the old pod, a WorkloadEntry naming a pod's IP, the same IP on
/// another network) and several services on one VIP. Lookups pick one deterministically.
#[test]
fn shared_addresses_are_all_kept_and_ranked() {
    const OLD: &str = "Kubernetes//Pod/default/old";
    const MOVER: &str = "Kubernetes//Pod/default/mover";
    const ENTRY: &str = "Kubernetes/networking.istio.io/WorkloadEntry/default/entry";
    let mut set = ResourceSet::new();
    set.apply(
        Kind::Address,
        vec![
            workload_resource(workload(OLD, [10, 0, 0, 1])),
            workload_resource(workload(MOVER, [10, 0, 0, 2])),
            service_in("default", "a", [10, 96, 0, 1], false),
        ],
        vec![],
    );
    let mut entry = workload(ENTRY, [10, 0, 0, 1]);
    entry.tunnel_protocol = pw::TunnelProtocol::Hbone as i32;
    let mut remote = workload("remote", [10, 0, 0, 1]);
    remote.network = "net2".into();
    let mut mover = workload(MOVER, [10, 0, 0, 1]);
    mover.tunnel_protocol = pw::TunnelProtocol::Hbone as i32;
    let a = set.apply(
        Kind::Address,
        vec![
            // A WorkloadEntry (in the mesh) claiming old's IP.
            workload_resource(entry),
            // A pod moving onto old's IP.
            workload_resource(mover),
            // The same IP on another network.
            workload_resource(remote),
            // Services of other namespaces on a's VIP, one canonical.
            service_in("other", "b", [10, 96, 0, 1], false),
            service_in("zeta", "c", [10, 96, 0, 1], true),
            workload_resource(workload("fine", [10, 0, 0, 3])),
        ],
        vec![],
    );
    assert!(a.rejected.is_empty(), "{:?}", a.rejected);
    assert_eq!((a.updated, a.removed), (6, 0));
    let s = a.snapshot.unwrap();
    assert_eq!(
        uids(&s),
        [
            "Kubernetes//Pod/default/mover",
            "Kubernetes//Pod/default/old",
            "Kubernetes/networking.istio.io/WorkloadEntry/default/entry",
            "fine",
            "remote"
        ]
    );
    let at: Vec<&str> = s
        .workloads_at(ip("10.0.0.1"))
        .iter()
        .map(|w| &*w.uid)
        .collect();
    // Pods first (the HBONE one first among them), then the WorkloadEntry, then by uid.
    assert_eq!(at, [MOVER, OLD, ENTRY, "remote"]);
    assert_eq!(&*s.workload_by_ip(ip("10.0.0.1")).unwrap().uid, MOVER);
    assert_eq!(&*s.workload_by_addr("", ip("10.0.0.1")).unwrap().uid, MOVER);
    assert_eq!(
        &*s.workload_by_addr("net2", ip("10.0.0.1")).unwrap().uid,
        "remote"
    );
    assert!(s.workload_by_addr("net3", ip("10.0.0.1")).is_none());
    assert!(
        s.workloads_at(ip("10.0.0.2")).is_empty(),
        "mover left 10.0.0.2"
    );

    let vip = ip("10.96.0.1");
    let name = |svc: Option<&Arc<crate::state::Service>>| svc.map(|s| s.name.to_string());
    assert_eq!(s.services_at_vip(vip).count(), 3);
    assert_eq!(
        name(s.service_for("", vip, Some("other"))).as_deref(),
        Some("b")
    );
    assert_eq!(
        name(s.service_for("", vip, Some("default"))).as_deref(),
        Some("a")
    );
    assert_eq!(
        name(s.service_for("", vip, Some("elsewhere"))).as_deref(),
        Some("c"),
        "no service in the client's namespace: the canonical one"
    );
    assert_eq!(name(s.service_by_vip(vip)).as_deref(), Some("c"));
    assert!(
        s.service_for("net2", vip, None).is_none(),
        "VIPs are per network"
    );
    assert_eq!(set.versions(Kind::Address).len(), 8);

    // Removing the winner hands the IP to the next in rank.
    let a = set.apply(Kind::Address, vec![], vec![MOVER.into()]);
    let s = a.snapshot.unwrap();
    assert_eq!(&*s.workload_by_addr("", ip("10.0.0.1")).unwrap().uid, OLD);
}

#[test]
fn many_claims_to_one_ip_all_apply() {
    let mut set = ResourceSet::new();
    set.apply(
        Kind::Address,
        vec![
            workload_resource(workload("owner", [10, 0, 0, 1])),
            workload_resource(workload("doomed", [10, 0, 0, 2])),
        ],
        vec![],
    );
    let mut resources: Vec<Resource> = (0..20)
        .map(|i| workload_resource(workload(&format!("t{i:02}"), [10, 0, 0, 1])))
        .collect();
    resources.push(workload_resource(workload("innocent", [10, 0, 1, 1])));
    let a = set.apply(Kind::Address, resources, vec!["doomed".into()]);
    assert!(a.rejected.is_empty(), "{:?}", a.rejected);
    assert_eq!((a.updated, a.removed), (21, 1));
    let s = a.snapshot.unwrap();
    assert_eq!(s.workload_count(), 22);
    assert_eq!(s.workloads_at(ip("10.0.0.1")).len(), 21);
    // No pod, no HBONE among them: by uid.
    assert_eq!(&*s.workload_by_ip(ip("10.0.0.1")).unwrap().uid, "owner");
    assert!(s.workload_by_ip(ip("10.0.0.2")).is_none());
}

#[test]
fn ten_thousand_workloads_apply_in_one_response() {
    let mut set = ResourceSet::new();
    let resources: Vec<Resource> = (0..10_000u32)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            workload_resource(workload(&format!("w{i}"), [10, 1, a, b]))
        })
        .collect();
    let a = set.apply(Kind::Address, resources, vec![]);
    assert!(a.rejected.is_empty());
    let s = a.snapshot.unwrap();
    assert_eq!(s.workload_count(), 10_000);
    assert!(s.workload_by_ip(ip("10.1.39.15")).is_some());
}

fn service_address(s: pw::Service) -> Resource {
    let name = format!("{}/{}", s.namespace, s.hostname);
    address_resource(
        &name,
        "v1",
        pw::Address {
            r#type: Some(pw::address::Type::Service(s)),
        },
    )
}

fn net_addr(network: &str, ip: &str, length: Option<u32>) -> pw::NetworkAddress {
    let address = match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    pw::NetworkAddress {
        network: network.into(),
        address,
        length,
    }
}

fn ports(pairs: &[(u32, u32)]) -> Vec<pw::Port> {
    pairs
        .iter()
        .map(|&(service_port, target_port)| pw::Port {
            service_port,
            target_port,
        })
        .collect()
}

fn member_of(key: &str, pairs: &[(u32, u32)]) -> HashMap<String, pw::PortList> {
    HashMap::from([(
        key.to_string(),
        pw::PortList {
            ports: ports(pairs),
        },
    )])
}

/// The shapes istiod sends, as istiod encodes them: a ServiceEntry with DNS resolution (its
/// endpoint a workload with a hostname and no address), a headless service (no VIP) and its
/// pod, two services of two namespaces on one VIP, a `PASSTHROUGH` ServiceEntry, a CIDR VIP
/// (`length` 24; a VIP of length 32 is one address), and two workloads with one IP on two
/// networks. Also a client pod (`client`, namespace default, node-a) to route from.
pub(crate) fn istiod_shapes() -> Vec<Resource> {
    let pod = |ns: &str, name: &str, ip: [u8; 4], network: &str, node: &str| {
        let mut w = workload(&format!("Kubernetes//Pod/{ns}/{name}"), ip);
        w.name = name.into();
        w.namespace = ns.into();
        w.network = network.into();
        w.node = node.into();
        w
    };
    let mut client = pod("default", "client", [10, 244, 1, 8], "", "node-a");
    client.tunnel_protocol = pw::TunnelProtocol::Hbone as i32;
    let mut db = workload(
        "Kubernetes/networking.istio.io/ServiceEntry/default/db/db.example.com",
        [0; 4],
    );
    db.addresses.clear();
    db.hostname = "db.example.com".into();
    db.name = "db".into();
    db.node.clear();
    db.services = member_of("default/db.example.com", &[(5432, 5432)]);
    let mut hl = pod("default", "hl-0", [10, 244, 2, 30], "", "node-b");
    hl.tunnel_protocol = pw::TunnelProtocol::Hbone as i32;
    hl.hostname = "hl-0.hl.default.svc.cluster.local".into();
    hl.services = member_of("default/hl.default.svc.cluster.local", &[]);
    let mut sh_d = pod("default", "sh-d", [10, 244, 2, 51], "", "node-b");
    sh_d.services = member_of("default/shared.default.svc.cluster.local", &[]);
    let mut sh_o = pod("other", "sh-o", [10, 244, 2, 52], "", "node-b");
    sh_o.services = member_of("other/shared.other.svc.cluster.local", &[]);
    let dup_here = pod("default", "dup-here", [10, 244, 9, 9], "", "node-b");
    let dup_there = pod("default", "dup-there", [10, 244, 9, 9], "net2", "node-c");

    let svc =
        |ns: &str, name: &str, host: &str, vips: Vec<pw::NetworkAddress>, p: &[(u32, u32)]| {
            pw::Service {
                name: name.into(),
                namespace: ns.into(),
                hostname: host.into(),
                addresses: vips,
                ports: ports(p),
                ..Default::default()
            }
        };
    let passthrough = Some(pw::LoadBalancing {
        mode: pw::load_balancing::Mode::Passthrough as i32,
        ..Default::default()
    });
    let db_svc = svc(
        "default",
        "db",
        "db.example.com",
        vec![net_addr("", "240.240.0.1", Some(32))],
        &[(5432, 5432)],
    );
    let hl_svc = svc(
        "default",
        "hl",
        "hl.default.svc.cluster.local",
        vec![],
        &[(80, 8080)],
    );
    let shared_d = svc(
        "default",
        "shared",
        "shared.default.svc.cluster.local",
        vec![net_addr("", "10.96.5.5", None)],
        &[(80, 8080)],
    );
    let shared_o = svc(
        "other",
        "shared",
        "shared.other.svc.cluster.local",
        vec![net_addr("", "10.96.5.5", None)],
        &[(80, 9090)],
    );
    let mut ext = svc(
        "default",
        "ext",
        "ext.example.com",
        vec![net_addr("", "240.240.0.5", None)],
        &[(443, 443)],
    );
    ext.load_balancing = passthrough.clone();
    let mut range = svc(
        "default",
        "range",
        "range.example.com",
        vec![net_addr("", "203.0.113.0", Some(24))],
        &[(443, 443)],
    );
    range.load_balancing = passthrough;

    let mut out: Vec<Resource> = [client, db, hl, sh_d, sh_o, dup_here, dup_there]
        .into_iter()
        .map(workload_resource)
        .collect();
    out.extend(
        [db_svc, hl_svc, shared_d, shared_o, ext, range]
            .into_iter()
            .map(service_address),
    );
    out
}

#[test]
fn istiod_shapes_are_all_accepted() {
    let mut set = ResourceSet::new();
    let a = set.apply(Kind::Address, istiod_shapes(), vec![]);
    assert!(a.rejected.is_empty(), "{:?}", a.rejected);
    assert_eq!(a.updated, 13);
    let s = a.snapshot.unwrap();
    assert_eq!((s.workload_count(), s.service_count()), (7, 6));
    let db = s.services_by_hostname("db.example.com")[0].clone();
    assert_eq!(db.vips.len(), 1, "/32 is one VIP");
    assert_eq!(&*db.endpoints[0].workload.hostname, "db.example.com");
    assert!(db.endpoints[0].workload.workload_ips.is_empty());
    let hl = s
        .service_by_host("default", "hl.default.svc.cluster.local")
        .unwrap();
    assert!(hl.is_headless());
    assert_eq!(hl.endpoints.len(), 1);
    assert_eq!(s.services_at_vip(ip("10.96.5.5")).count(), 2);
    assert!(
        s.service_by_vip(ip("240.240.0.5"))
            .unwrap()
            .is_passthrough()
    );
    let range = s.service_for("", ip("203.0.113.99"), None).unwrap();
    assert_eq!(&*range.name, "range");
    assert_eq!(range.cidr_vips[0].cidr.to_string(), "203.0.113.0/24");
    assert_eq!(s.workloads_at(ip("10.244.9.9")).len(), 2);
    assert_eq!(
        &*s.workload_by_addr("net2", ip("10.244.9.9")).unwrap().name,
        "dup-there"
    );
}
