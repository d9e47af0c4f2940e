//! Seeds for `xds_protobuf` and `xds_response`: workload, service and policy resources as istiod
//! encodes them, whole Delta ADS responses, and broken ones.

use std::collections::HashMap;

use prost::Message;
use zring::xds::proto::discovery::{DeltaDiscoveryResponse, Resource};
use zring::xds::proto::{ADDRESS_TYPE, AUTHORIZATION_TYPE, security as ps, workload as pw};

use super::Seeds;

fn v4(s: &str) -> Vec<u8> {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec()
}

fn workload(uid: &str, ip: &str) -> pw::Workload {
    pw::Workload {
        uid: uid.into(),
        name: "appa".into(),
        namespace: "default".into(),
        addresses: vec![v4(ip)],
        tunnel_protocol: pw::TunnelProtocol::Hbone as i32,
        service_account: "appa".into(),
        node: "a".into(),
        canonical_name: "appa".into(),
        canonical_revision: "v1".into(),
        workload_type: pw::WorkloadType::Pod as i32,
        workload_name: "appa".into(),
        services: HashMap::from([(
            "default/appb.default.svc.cluster.local".to_string(),
            pw::PortList {
                ports: vec![pw::Port {
                    service_port: 8000,
                    target_port: 80,
                }],
            },
        )]),
        authorization_policies: vec!["default/allow".into()],
        capacity: Some(2),
        waypoint: Some(pw::GatewayAddress {
            destination: Some(pw::gateway_address::Destination::Address(
                pw::NetworkAddress {
                    network: String::new(),
                    address: v4("10.244.3.3"),
                    length: None,
                },
            )),
            hbone_mtls_port: 15008,
        }),
        ..Default::default()
    }
}

fn service() -> pw::Service {
    pw::Service {
        name: "appb".into(),
        namespace: "default".into(),
        hostname: "appb.default.svc.cluster.local".into(),
        addresses: vec![pw::NetworkAddress {
            network: String::new(),
            address: v4("10.96.101.203"),
            length: None,
        }],
        ports: vec![pw::Port {
            service_port: 8000,
            target_port: 80,
        }],
        subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/extra".into()],
        ..Default::default()
    }
}

fn policy(name: &str) -> ps::Authorization {
    let exact = |s: &str| ps::StringMatch {
        match_type: Some(ps::string_match::MatchType::Exact(s.into())),
    };
    ps::Authorization {
        name: name.into(),
        namespace: "default".into(),
        scope: ps::Scope::WorkloadSelector as i32,
        action: ps::Action::Allow as i32,
        rules: vec![ps::Rule {
            clauses: vec![ps::Clause {
                matches: vec![ps::Match {
                    principals: vec![exact("cluster.local/ns/default/sa/appa")],
                    not_source_ips: vec![ps::Address {
                        address: v4("10.1.0.0"),
                        length: 16,
                    }],
                    destination_ports: vec![80],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    }
}

fn address(t: pw::address::Type) -> pw::Address {
    pw::Address { r#type: Some(t) }
}

pub fn protobufs() -> Seeds {
    let mut bad_ip = workload("Kubernetes//Pod/default/bad", "10.0.0.1");
    bad_ip.addresses = vec![vec![1, 2, 3, 4, 5]];
    let mut no_ip = workload("Kubernetes//Pod/default/dns", "10.0.0.1");
    no_ip.addresses.clear();
    no_ip.hostname = "dns.example".into();
    let mut bad_policy = policy("bad");
    bad_policy.rules[0].clauses[0].matches[0].destination_ports = vec![70000];
    vec![
        (
            "workload.pb",
            address(pw::address::Type::Workload(workload(
                "Kubernetes//Pod/default/appa",
                "10.244.1.8",
            )))
            .encode_to_vec(),
        ),
        (
            "service.pb",
            address(pw::address::Type::Service(service())).encode_to_vec(),
        ),
        ("policy.pb", policy("allow").encode_to_vec()),
        (
            "workload-5-byte-ip.pb",
            address(pw::address::Type::Workload(bad_ip)).encode_to_vec(),
        ),
        (
            "workload-hostname-only.pb",
            address(pw::address::Type::Workload(no_ip)).encode_to_vec(),
        ),
        ("policy-bad-port.pb", bad_policy.encode_to_vec()),
        (
            "empty-address.pb",
            pw::Address { r#type: None }.encode_to_vec(),
        ),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_string(), b))
    .collect()
}

fn resource(name: &str, type_url: &str, value: Vec<u8>) -> Resource {
    Resource {
        name: name.into(),
        version: "1".into(),
        resource: Some(prost_types::Any {
            type_url: type_url.into(),
            value,
        }),
        ..Default::default()
    }
}

fn response(type_url: &str, resources: Vec<Resource>, removed: &[&str]) -> Vec<u8> {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: "n1".into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

pub fn responses() -> Seeds {
    let w = |uid: &str, ip: &str| {
        resource(
            uid,
            ADDRESS_TYPE,
            address(pw::address::Type::Workload(workload(uid, ip))).encode_to_vec(),
        )
    };
    let svc = resource(
        "default/appb.default.svc.cluster.local",
        ADDRESS_TYPE,
        address(pw::address::Type::Service(service())).encode_to_vec(),
    );
    let pol = resource(
        "default/allow",
        AUTHORIZATION_TYPE,
        policy("allow").encode_to_vec(),
    );
    vec![
        (
            "addresses.pb",
            response(
                ADDRESS_TYPE,
                vec![
                    w("Kubernetes//Pod/default/appa", "10.244.1.8"),
                    w("Kubernetes//Pod/default/appb", "10.244.2.4"),
                    svc.clone(),
                ],
                &[],
            ),
        ),
        (
            "conflict.pb",
            response(
                ADDRESS_TYPE,
                vec![
                    w("Kubernetes//Pod/default/appa", "10.244.1.8"),
                    w("Kubernetes//Pod/default/thief", "10.244.1.8"),
                    w("Kubernetes//Pod/default/appa", "10.244.1.9"),
                ],
                &["Kubernetes//Pod/default/gone"],
            ),
        ),
        (
            "name-mismatch.pb",
            response(
                ADDRESS_TYPE,
                vec![resource(
                    "wrong-name",
                    ADDRESS_TYPE,
                    address(pw::address::Type::Service(service())).encode_to_vec(),
                )],
                &[],
            ),
        ),
        (
            "policies.pb",
            response(AUTHORIZATION_TYPE, vec![pol.clone()], &["default/old"]),
        ),
        ("wrong-type.pb", response(ADDRESS_TYPE, vec![pol], &[])),
        (
            "garbage-payload.pb",
            response(
                ADDRESS_TYPE,
                vec![resource("x", ADDRESS_TYPE, b"\xff\xff\xff".to_vec())],
                &[],
            ),
        ),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_string(), b))
    .collect()
}
