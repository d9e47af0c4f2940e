//! Resource map tables: adds, replacements and removals, per-resource rejection (decode,
//! type, name, conversion) with the previous version kept, and shared addresses kept and
//! ranked rather than rejected.

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
    assert_eq!(uids(&s), ["Kubernetes//Pod/default/mover", "Kubernetes//Pod/default/old", "Kubernetes/networking.istio.io/WorkloadEntry/default/entry", "fine", "remote"]);
    let at: Vec<&str> = s.workloads_at(ip("10.0.0.1")).iter().map(|w| &*w.uid).collect();
    // Pods first (the HBONE one first among them), then the WorkloadEntry, then by uid.
    assert_eq!(at, [MOVER, OLD, ENTRY, "remote"]);
    assert_eq!(&*s.workload_by_ip(ip("10.0.0.1")).unwrap().uid, MOVER);
    assert_eq!(&*s.workload_by_addr("", ip("10.0.0.1")).unwrap().uid, MOVER);
    assert_eq!(&*s.workload_by_addr("net2", ip("10.0.0.1")).unwrap().uid, "remote");
    assert!(s.workload_by_addr("net3", ip("10.0.0.1")).is_none());
    assert!(s.workloads_at(ip("10.0.0.2")).is_empty(), "mover left 10.0.0.2");

    let vip = ip("10.96.0.1");
    let name = |svc: Option<&Arc<crate::state::Service>>| svc.map(|s| s.name.to_string());
    assert_eq!(s.services_at_vip(vip).count(), 3);
    assert_eq!(name(s.service_for("", vip, Some("other"))).as_deref(), Some("b"));
    assert_eq!(name(s.service_for("", vip, Some("default"))).as_deref(), Some("a"));
    assert_eq!(
        name(s.service_for("", vip, Some("elsewhere"))).as_deref(),
        Some("c"),
        "no service in the client's namespace: the canonical one"
    );
    assert_eq!(name(s.service_by_vip(vip)).as_deref(), Some("c"));
    assert!(s.service_for("net2", vip, None).is_none(), "VIPs are per network");
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
