//! Resource map tables: adds, replacements and removals, per-resource rejection (decode,
//! type, name, conversion, conflicts) with the previous version kept, and the conflict budget.

use std::net::IpAddr;

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

#[test]
fn conflicts_blame_the_newcomer_and_restore_replaced_versions() {
    let mut set = ResourceSet::new();
    set.apply(
        Kind::Address,
        vec![
            workload_resource(workload("old", [10, 0, 0, 1])),
            workload_resource(workload("mover", [10, 0, 0, 2])),
            service_resource("a", [10, 96, 0, 1]),
        ],
        vec![],
    );
    let a = set.apply(
        Kind::Address,
        vec![
            // A newcomer claiming old's IP.
            workload_resource(workload("thief", [10, 0, 0, 1])),
            // An existing workload moving onto old's IP: it stays where it was.
            workload_resource(workload("mover", [10, 0, 0, 1])),
            // A new service on a's VIP.
            service_resource("b", [10, 96, 0, 1]),
            // And one change that is fine.
            workload_resource(workload("fine", [10, 0, 0, 3])),
        ],
        vec![],
    );
    let mut names: Vec<&str> = a.rejected.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["default/b.default.svc.cluster.local", "mover", "thief"]
    );
    assert!(
        a.rejected
            .iter()
            .all(|r| matches!(r.error, ResourceError::Conflict(_)))
    );
    let s = a.snapshot.unwrap();
    assert_eq!(uids(&s), ["fine", "mover", "old"]);
    assert_eq!(&*s.workload_by_ip(ip("10.0.0.1")).unwrap().uid, "old");
    assert_eq!(&*s.workload_by_ip(ip("10.0.0.2")).unwrap().uid, "mover");
    assert_eq!(
        &*s.service_by_vip(ip("10.96.0.1")).unwrap().name,
        "a",
        "the first owner keeps its VIP"
    );
    assert_eq!(set.versions(Kind::Address).len(), 4);
}

#[test]
fn too_many_conflicts_refuse_every_update_of_the_response() {
    let mut set = ResourceSet::new();
    set.apply(
        Kind::Address,
        vec![
            workload_resource(workload("owner", [10, 0, 0, 1])),
            workload_resource(workload("doomed", [10, 0, 0, 2])),
        ],
        vec![],
    );
    let mut resources: Vec<Resource> = (0..MAX_CONFLICT_RETRIES + 4)
        .map(|i| workload_resource(workload(&format!("t{i}"), [10, 0, 0, 1])))
        .collect();
    resources.push(workload_resource(workload("innocent", [10, 0, 1, 1])));
    let a = set.apply(Kind::Address, resources, vec!["doomed".into()]);
    assert_eq!(a.rejected.len(), MAX_CONFLICT_RETRIES + 5);
    assert_eq!(a.updated, 0);
    // The removal still applies.
    assert_eq!(uids(&a.snapshot.unwrap()), ["owner"]);
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
