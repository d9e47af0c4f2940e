//! Conversion tables: every field of a full resource lands where it should, proto3 zero values
//! take the documented defaults, each kind of hostile value is the error that names it, and
//! random or mangled bytes never panic.

use std::collections::HashMap;
use std::net::IpAddr;

use prost::Message;

use super::*;
use crate::xds::proto::{security as ps, workload as pw};

fn v4(s: &str) -> Vec<u8> {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec()
}

fn v6(s: &str) -> Vec<u8> {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec()
}

fn ports(pairs: &[(u32, u32)]) -> pw::PortList {
    pw::PortList {
        ports: pairs
            .iter()
            .map(|&(service_port, target_port)| pw::Port {
                service_port,
                target_port,
            })
            .collect(),
    }
}

/// A workload with every field istiod fills set.
pub(crate) fn full_workload() -> pw::Workload {
    pw::Workload {
        uid: "Kubernetes//Pod/default/appa-1".into(),
        name: "appa-1".into(),
        namespace: "default".into(),
        addresses: vec![v4("10.244.1.5"), v6("fd00::5")],
        network: "net1".into(),
        tunnel_protocol: pw::TunnelProtocol::Hbone as i32,
        trust_domain: "example.org".into(),
        service_account: "appa".into(),
        waypoint: Some(pw::GatewayAddress {
            destination: Some(pw::gateway_address::Destination::Hostname(
                pw::NamespacedHostname {
                    namespace: "default".into(),
                    hostname: "waypoint.default.svc.cluster.local".into(),
                },
            )),
            hbone_mtls_port: 15008,
        }),
        network_gateway: Some(pw::GatewayAddress {
            destination: Some(pw::gateway_address::Destination::Address(
                pw::NetworkAddress {
                    network: "net2".into(),
                    address: v4("192.0.2.1"),
                    length: None,
                },
            )),
            hbone_mtls_port: 0,
        }),
        node: "node-a".into(),
        canonical_name: "appa".into(),
        canonical_revision: "v1".into(),
        workload_type: pw::WorkloadType::Pod as i32,
        workload_name: "appa".into(),
        native_tunnel: true,
        application_tunnel: Some(pw::ApplicationTunnel {
            protocol: pw::application_tunnel::Protocol::Proxy as i32,
            port: 15088,
        }),
        services: HashMap::from([
            (
                "default/zeta.default.svc.cluster.local".to_string(),
                ports(&[(80, 8080), (90, 0)]),
            ),
            (
                "default/alpha.default.svc.cluster.local".to_string(),
                ports(&[(443, 8443)]),
            ),
        ]),
        authorization_policies: vec!["default/allow-appa".into()],
        status: pw::WorkloadStatus::Unhealthy as i32,
        cluster_id: "c1".into(),
        locality: Some(pw::Locality {
            region: "r".into(),
            zone: "z".into(),
            subzone: "s".into(),
        }),
        network_mode: pw::NetworkMode::Standard as i32,
        capacity: Some(7),
        ..Default::default()
    }
}

pub(crate) fn full_service() -> pw::Service {
    pw::Service {
        name: "appb".into(),
        namespace: "default".into(),
        hostname: "appb.default.svc.cluster.local".into(),
        addresses: vec![pw::NetworkAddress {
            network: String::new(),
            address: v4("10.96.0.10"),
            length: None,
        }],
        ports: vec![
            pw::Port {
                service_port: 80,
                target_port: 8080,
            },
            pw::Port {
                service_port: 9090,
                target_port: 0,
            },
        ],
        subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/extra".into()],
        load_balancing: Some(pw::LoadBalancing {
            routing_preference: vec![
                pw::load_balancing::Scope::Zone as i32,
                pw::load_balancing::Scope::Node as i32,
            ],
            mode: pw::load_balancing::Mode::Failover as i32,
            health_policy: pw::load_balancing::HealthPolicy::AllowAll as i32,
            dns_connect_strategy: 0,
        }),
        ip_families: pw::IpFamilies::Dual as i32,
        canonical: true,
        ..Default::default()
    }
}

fn exact(s: &str) -> ps::StringMatch {
    ps::StringMatch {
        match_type: Some(ps::string_match::MatchType::Exact(s.into())),
    }
}

pub(crate) fn full_policy() -> ps::Authorization {
    ps::Authorization {
        name: "allow-appa".into(),
        namespace: "default".into(),
        scope: ps::Scope::WorkloadSelector as i32,
        action: ps::Action::Deny as i32,
        dry_run: true,
        rules: vec![ps::Rule {
            clauses: vec![ps::Clause {
                matches: vec![ps::Match {
                    namespaces: vec![exact("default")],
                    not_principals: vec![ps::StringMatch {
                        match_type: Some(ps::string_match::MatchType::Presence(())),
                    }],
                    principals: vec![
                        ps::StringMatch {
                            match_type: Some(ps::string_match::MatchType::Prefix("a".into())),
                        },
                        ps::StringMatch {
                            match_type: Some(ps::string_match::MatchType::Suffix("z".into())),
                        },
                    ],
                    service_accounts: vec![ps::ServiceAccountMatch {
                        namespace: "default".into(),
                        service_account: "appa".into(),
                    }],
                    source_ips: vec![ps::Address {
                        address: v4("10.1.2.3"),
                        length: 8,
                    }],
                    destination_ips: vec![ps::Address {
                        address: v6("fd00::1"),
                        length: 128,
                    }],
                    destination_ports: vec![80, 65535],
                    not_destination_ports: vec![22],
                    ..Default::default()
                }],
            }],
        }],
    }
}

#[test]
fn full_workload_converts_field_by_field() {
    let e = WorkloadEntry::try_from(full_workload()).unwrap();
    let w = &e.workload;
    assert_eq!(&*w.uid, "Kubernetes//Pod/default/appa-1");
    assert_eq!(
        w.workload_ips,
        [
            "10.244.1.5".parse::<IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    assert_eq!(w.protocol, Protocol::Hbone);
    assert_eq!(
        crate::identity::Identity::of_workload(w).unwrap().as_str(),
        "spiffe://example.org/ns/default/sa/appa"
    );
    assert_eq!(&*w.workload_type, "pod");
    assert_eq!(w.status, HealthStatus::Unhealthy);
    assert_eq!(&*w.cluster_id, "c1");
    assert_eq!(w.capacity, 7);
    assert!(w.native_tunnel);
    assert_eq!(
        w.application_tunnel,
        Some(ApplicationTunnel {
            protocol: TunnelProtocol::Proxy,
            port: Some(15088)
        })
    );
    assert_eq!(
        w.waypoint.as_ref().unwrap().to_string(),
        "default/waypoint.default.svc.cluster.local port 15008"
    );
    assert_eq!(
        w.network_gateway.as_ref().unwrap().to_string(),
        "net2/192.0.2.1 port 15008",
        "a gateway port of 0 is the default HBONE port"
    );
    assert_eq!((&*w.locality.region, &*w.locality.subzone), ("r", "s"));
    assert_eq!(&*w.authorization_policies[0], "default/allow-appa");
    // Memberships are sorted by key; target port 0 means no override and is dropped.
    let keys: Vec<String> = e.memberships.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        keys,
        [
            "default/alpha.default.svc.cluster.local",
            "default/zeta.default.svc.cluster.local"
        ]
    );
    assert_eq!(e.memberships[1].1, PortMap::from([(80, 8080)]));
    assert_eq!(
        AddressEntry::Workload(e).resource_name(),
        "Kubernetes//Pod/default/appa-1"
    );
}

#[test]
fn proto3_zero_values_take_the_workload_api_defaults() {
    let w = WorkloadEntry::try_from(pw::Workload {
        uid: "u".into(),
        namespace: "ns".into(),
        addresses: vec![v6("::ffff:10.0.0.1")],
        ..Default::default()
    })
    .unwrap()
    .workload;
    assert_eq!(
        crate::identity::Identity::of_workload(&w).unwrap().as_str(),
        "spiffe://cluster.local/ns/ns/sa/default"
    );
    assert_eq!(&*w.cluster_id, "Kubernetes");
    assert_eq!(w.capacity, 1);
    assert_eq!(w.protocol, Protocol::Tcp);
    assert_eq!(&*w.workload_type, "deployment");
    assert_eq!(
        w.workload_ips,
        ["10.0.0.1".parse::<IpAddr>().unwrap()],
        "IPv4-mapped IPv6 is stored as IPv4"
    );
    assert_eq!(w.application_tunnel, None);
}

#[test]
fn full_service_and_policy_convert() {
    let s = Service::try_from(full_service()).unwrap();
    assert_eq!(s.vips[0].to_string(), "/10.96.0.10");
    assert_eq!(s.ports, PortMap::from([(80, 8080), (9090, 0)]));
    assert_eq!(s.ip_families, Some(IpFamily::Dual));
    let lb = s.load_balancer.as_ref().unwrap();
    assert_eq!(
        lb.routing_preferences,
        [LoadBalancerScope::Zone, LoadBalancerScope::Node]
    );
    assert_eq!(lb.mode, LoadBalancerMode::Failover);
    assert_eq!(lb.health_policy, LoadBalancerHealthPolicy::AllowAll);
    assert!(s.canonical);
    assert_eq!(
        AddressEntry::Service(s).resource_name(),
        "default/appb.default.svc.cluster.local"
    );

    let p = Authorization::try_from(full_policy()).unwrap();
    assert_eq!(p.key(), "default/allow-appa");
    assert_eq!(
        (p.scope, p.action, p.dry_run),
        (PolicyScope::WorkloadSelector, PolicyAction::Deny, true)
    );
    let m = &p.rules[0][0][0];
    assert_eq!(m.namespaces, [StringMatch::Exact("default".into())]);
    assert_eq!(m.not_principals, [StringMatch::Presence]);
    assert_eq!(
        m.principals,
        [
            StringMatch::Prefix("a".into()),
            StringMatch::Suffix("z".into())
        ]
    );
    assert_eq!(&*m.service_accounts[0].service_account, "appa");
    assert_eq!(
        m.source_ips[0].to_string(),
        "10.0.0.0/8",
        "host bits cleared"
    );
    assert_eq!(m.destination_ips[0].to_string(), "fd00::1/128");
    assert_eq!(m.destination_ports, [80, 65535]);
    assert_eq!(m.not_destination_ports, [22]);
}

/// Shapes istiod sends that zring once refused (each a NACK) now convert, and say precisely
/// what they are: hostname-addressed and address-less workloads, headless services, CIDR VIPs
/// (a prefix shorter than the family; the full width is one address), `PASSTHROUGH`.
#[test]
fn everything_istiod_sends_converts() {
    // A ServiceEntry endpoint resolved by DNS: no address, a hostname.
    let mut w = full_workload();
    w.addresses.clear();
    w.hostname = "db.example.com".into();
    let e = WorkloadEntry::try_from(w).unwrap();
    assert!(e.workload.workload_ips.is_empty());
    assert_eq!(&*e.workload.hostname, "db.example.com");
    // A workload on another network known only by its network gateway.
    let mut w = full_workload();
    w.addresses.clear();
    let e = WorkloadEntry::try_from(w).unwrap();
    assert!(e.workload.workload_ips.is_empty() && e.workload.hostname.is_empty());
    assert!(e.workload.network_gateway.is_some());

    // Headless: no VIP.
    let mut s = full_service();
    s.addresses.clear();
    let svc = Service::try_from(s).unwrap();
    assert!(svc.is_headless());
    assert!(svc.vips.is_empty() && svc.cidr_vips.is_empty());

    // CIDR VIPs, with host bits cleared; /32 and /128 are single VIPs.
    let mut s = full_service();
    s.addresses = vec![
        pw::NetworkAddress {
            network: "net1".into(),
            address: v4("10.1.2.3"),
            length: Some(16),
        },
        pw::NetworkAddress {
            network: String::new(),
            address: v6("fd00::1"),
            length: Some(64),
        },
        pw::NetworkAddress {
            network: String::new(),
            address: v4("10.96.0.11"),
            length: Some(32),
        },
        pw::NetworkAddress {
            network: String::new(),
            address: v6("fd00::11"),
            length: Some(128),
        },
    ];
    s.load_balancing.as_mut().unwrap().mode = pw::load_balancing::Mode::Passthrough as i32;
    let svc = Service::try_from(s).unwrap();
    let cidrs: Vec<String> = svc
        .cidr_vips
        .iter()
        .map(|c| format!("{}/{}", c.network, c.cidr))
        .collect();
    assert_eq!(cidrs, ["net1/10.1.0.0/16", "/fd00::/64"]);
    let vips: Vec<String> = svc.vips.iter().map(|v| v.to_string()).collect();
    assert_eq!(vips, ["/10.96.0.11", "/fd00::11"]);
    assert!(svc.is_passthrough());
    assert!(!svc.is_headless());

    // A gateway is one address: a range there is malformed.
    let err = workload_error(|w| {
        if let Some(pw::gateway_address::Destination::Address(a)) =
            &mut w.network_gateway.as_mut().unwrap().destination
        {
            a.length = Some(24);
        }
    });
    assert!(
        matches!(
            err,
            ConvertError::Invalid {
                field: "networkGateway",
                ..
            }
        ),
        "{err:?}"
    );
}

fn workload_error(edit: impl FnOnce(&mut pw::Workload)) -> ConvertError {
    let mut w = full_workload();
    edit(&mut w);
    WorkloadEntry::try_from(w).unwrap_err()
}

#[test]
fn hostile_workloads_are_named_errors() {
    use ConvertError as E;
    type Case = (&'static str, ConvertError, fn(&ConvertError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "3-byte IP",
            workload_error(|w| w.addresses = vec![vec![1, 2, 3]]),
            |e| matches!(e, E::IpLength { len: 3, .. }),
        ),
        (
            "17-byte IP",
            workload_error(|w| w.addresses.push(vec![0; 17])),
            |e| matches!(e, E::IpLength { len: 17, .. }),
        ),
        (
            "empty IP bytes",
            workload_error(|w| w.addresses.push(Vec::new())),
            |e| matches!(e, E::IpLength { len: 0, .. }),
        ),
        (
            "service port above 65535",
            workload_error(|w| {
                w.services
                    .insert("default/x.svc".into(), ports(&[(70000, 80)]));
            }),
            |e| matches!(e, E::Port { value: 70000, .. }),
        ),
        (
            "service port 0",
            workload_error(|w| {
                w.services.insert("default/x.svc".into(), ports(&[(0, 80)]));
            }),
            |e| matches!(e, E::Port { value: 0, .. }),
        ),
        (
            "target port u32::MAX",
            workload_error(|w| {
                w.services
                    .insert("default/x.svc".into(), ports(&[(80, u32::MAX)]));
            }),
            |e| {
                matches!(
                    e,
                    E::Port {
                        value: u32::MAX,
                        ..
                    }
                )
            },
        ),
        (
            "service port mapped twice",
            workload_error(|w| {
                w.services
                    .insert("default/x.svc".into(), ports(&[(80, 81), (80, 82)]));
            }),
            |e| {
                matches!(
                    e,
                    E::Invalid {
                        field: "services",
                        ..
                    }
                )
            },
        ),
        (
            "services key without a slash",
            workload_error(|w| {
                w.services.insert("nonamespace".into(), ports(&[]));
            }),
            |e| {
                matches!(
                    e,
                    E::Invalid {
                        field: "services",
                        ..
                    }
                )
            },
        ),
        (
            "unknown tunnel protocol",
            workload_error(|w| w.tunnel_protocol = 7),
            |e| {
                matches!(
                    e,
                    E::UnknownEnum {
                        field: "tunnelProtocol",
                        value: 7
                    }
                )
            },
        ),
        ("unknown status", workload_error(|w| w.status = -1), |e| {
            matches!(
                e,
                E::UnknownEnum {
                    field: "status",
                    ..
                }
            )
        }),
        (
            "unknown workload type",
            workload_error(|w| w.workload_type = 99),
            |e| {
                matches!(
                    e,
                    E::UnknownEnum {
                        field: "workloadType",
                        ..
                    }
                )
            },
        ),
        (
            "unknown network mode",
            workload_error(|w| w.network_mode = 2),
            |e| {
                matches!(
                    e,
                    E::UnknownEnum {
                        field: "networkMode",
                        ..
                    }
                )
            },
        ),
        (
            "unknown application tunnel protocol",
            workload_error(|w| w.application_tunnel.as_mut().unwrap().protocol = 5),
            |e| matches!(e, E::UnknownEnum { .. }),
        ),
        (
            "application tunnel port above 65535",
            workload_error(|w| w.application_tunnel.as_mut().unwrap().port = 65536),
            |e| matches!(e, E::Port { value: 65536, .. }),
        ),
        (
            "gateway without destination",
            workload_error(|w| w.waypoint.as_mut().unwrap().destination = None),
            |e| matches!(e, E::Missing(_)),
        ),
        (
            "gateway port above 65535",
            workload_error(|w| w.waypoint.as_mut().unwrap().hbone_mtls_port = 1 << 20),
            |e| matches!(e, E::Port { .. }),
        ),
        (
            "huge name",
            workload_error(|w| w.name = "n".repeat(10 << 20)),
            |e| matches!(e, E::TooLong { field: "name", .. }),
        ),
        (
            "namespace that breaks the identity",
            workload_error(|w| w.namespace = "a/b".into()),
            |e| matches!(e, E::Snapshot(_)),
        ),
        (
            "control character in a label",
            workload_error(|w| w.canonical_revision = "v1\r\nx: y".into()),
            |e| matches!(e, E::Snapshot(_)),
        ),
        ("empty uid", workload_error(|w| w.uid.clear()), |e| {
            matches!(e, E::Snapshot(_))
        }),
    ];
    for (what, error, expected) in cases {
        assert!(expected(&error), "{what}: got {error:?}");
        let line = error.to_string();
        assert!(line.len() < 400, "{what}: message not bounded: {line}");
    }
}

#[test]
fn hostile_services_and_policies_are_named_errors() {
    use ConvertError as E;
    let service = |edit: fn(&mut pw::Service)| {
        let mut s = full_service();
        edit(&mut s);
        Service::try_from(s).unwrap_err()
    };
    assert!(matches!(
        service(|s| s.addresses[0].length = Some(33)),
        E::Invalid {
            field: "addresses",
            ..
        }
    ));
    assert!(matches!(
        service(|s| s.addresses[0].address = vec![1; 5]),
        E::IpLength { len: 5, .. }
    ));
    assert!(matches!(
        service(|s| s.ports[0].service_port = 0),
        E::Port { value: 0, .. }
    ));
    assert!(matches!(
        service(|s| s.ports[1].service_port = 80),
        E::Invalid { field: "ports", .. }
    ));
    assert!(matches!(
        service(|s| s.load_balancing.as_mut().unwrap().routing_preference = vec![0]),
        E::UnknownEnum { value: 0, .. }
    ));
    assert!(matches!(
        service(|s| s.load_balancing.as_mut().unwrap().mode = 9),
        E::UnknownEnum { value: 9, .. }
    ));
    assert!(matches!(
        service(|s| s.ip_families = 4),
        E::UnknownEnum { value: 4, .. }
    ));
    assert!(matches!(
        service(|s| s.hostname = "a/b".into()),
        E::Snapshot(_)
    ));
    assert!(matches!(
        service(|s| s.subject_alt_names.push(String::new())),
        E::Snapshot(_)
    ));

    let policy = |edit: fn(&mut ps::Match)| {
        let mut p = full_policy();
        edit(&mut p.rules[0].clauses[0].matches[0]);
        Authorization::try_from(p).unwrap_err()
    };
    assert!(matches!(
        policy(|m| m.source_ips[0].length = 33),
        E::Invalid {
            field: "sourceIps",
            ..
        }
    ));
    assert!(matches!(
        policy(|m| m.destination_ips[0].length = 300),
        E::Invalid {
            field: "destinationIps",
            ..
        }
    ));
    assert!(matches!(
        policy(|m| m.source_ips[0].address = vec![9; 7]),
        E::IpLength { len: 7, .. }
    ));
    assert!(matches!(
        policy(|m| m.namespaces.push(ps::StringMatch { match_type: None })),
        E::Missing(_)
    ));
    assert!(matches!(
        policy(|m| m.destination_ports.push(0)),
        E::Port { value: 0, .. }
    ));
    assert!(matches!(
        policy(|m| m.not_destination_ports.push(65536)),
        E::Port { value: 65536, .. }
    ));
    let mut p = full_policy();
    p.scope = 3;
    assert!(matches!(
        Authorization::try_from(p).unwrap_err(),
        E::UnknownEnum { field: "scope", .. }
    ));
    let mut p = full_policy();
    p.action = 2; // CUSTOM never reaches ztunnel
    assert!(matches!(
        Authorization::try_from(p).unwrap_err(),
        E::UnknownEnum {
            field: "action",
            ..
        }
    ));
    let mut p = full_policy();
    p.name = "has space".into();
    assert!(matches!(
        Authorization::try_from(p).unwrap_err(),
        E::Snapshot(_)
    ));

    assert!(matches!(
        AddressEntry::try_from(pw::Address { r#type: None }),
        Err(E::Missing(_))
    ));
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes and converts arbitrary bytes as both resource types; only the absence of a panic
/// is checked, plus that some inputs get far enough to convert (so the test exercises more
/// than the decoder).
#[test]
fn random_and_mangled_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = vec![
        pw::Address {
            r#type: Some(pw::address::Type::Workload(full_workload())),
        }
        .encode_to_vec(),
        pw::Address {
            r#type: Some(pw::address::Type::Service(full_service())),
        }
        .encode_to_vec(),
        full_policy().encode_to_vec(),
    ];
    let mut converted = 0;
    for i in 0..30_000 {
        let bytes = if i % 3 == 0 {
            let len = rng.below(256);
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                if b.is_empty() {
                    break;
                }
                match rng.below(3) {
                    0 => {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                    1 => {
                        let at = rng.below(b.len());
                        b[at] = rng.next() as u8;
                    }
                    _ => b.truncate(rng.below(b.len() + 1)),
                }
            }
            b
        };
        if let Ok(a) = pw::Address::decode(&*bytes)
            && AddressEntry::try_from(a).is_ok()
        {
            converted += 1;
        }
        if let Ok(p) = ps::Authorization::decode(&*bytes)
            && Authorization::try_from(p).is_ok()
        {
            converted += 1;
        }
    }
    assert!(converted > 100, "only {converted} inputs converted");
}
