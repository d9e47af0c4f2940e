//! Table tests for the outbound routing decision, on snapshots parsed from local YAML.

use super::*;
use crate::config::OWN_PORTS;
use crate::xds::local;

const NODE_A: &str = "a";

/// appa and appa-local on node a; appb (HBONE) and tcpb (TCP) on node b; service appb with
/// two endpoints of different capacity; a waypoint `wp` on node b serving service `viawp`
/// and workload `wpclient-target`. For zring's own ports: `hostnet`, a host-network workload
/// on node a (its IP is node a's underlay address) behind service `hostmetrics` (9000 → 15020);
/// service `gw` whose port 9008 maps to appb's 15008; service `local15006` whose 7000 maps to
/// appa-local's 15006.
fn snapshot() -> Snapshot {
    local::parse(
        r#"
workloads:
- uid: u-appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
- uid: u-local
  name: appa-local
  namespace: default
  workloadIps: ["10.244.1.9"]
  protocol: HBONE
  node: a
  services:
    "default/local15006.default.svc.cluster.local": {}
- uid: u-appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["10.244.2.4"]
  protocol: HBONE
  node: b
  capacity: 3
  services:
    "default/appb.default.svc.cluster.local":
      8000: 8080
- uid: u-appb2
  name: appb2
  namespace: default
  serviceAccount: appb
  workloadIps: ["10.244.2.5"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local": {}
- uid: u-sick
  name: sick
  namespace: default
  workloadIps: ["10.244.2.6"]
  protocol: HBONE
  node: b
  status: Unhealthy
  services:
    "default/sickonly.default.svc.cluster.local": {}
- uid: u-tcpb
  name: tcpb
  namespace: default
  workloadIps: ["10.244.2.7"]
  protocol: TCP
  node: b
- uid: u-wp
  name: wp
  namespace: default
  serviceAccount: waypoint
  workloadIps: ["10.244.2.50"]
  protocol: HBONE
  node: b
- uid: u-behind
  name: behind
  namespace: default
  workloadIps: ["10.244.2.8"]
  protocol: HBONE
  node: b
  waypoint:
    destination: "/10.244.2.50"
    hboneMtlsPort: 15008
- uid: u-hostnet
  name: hostnet
  namespace: kube-system
  workloadIps: ["172.31.0.11"]
  protocol: TCP
  node: a
  services:
    "kube-system/hostmetrics.kube-system.svc.cluster.local": {}
- uid: u-gw
  name: gw
  namespace: default
  workloadIps: ["10.244.2.9"]
  protocol: TCP
  node: b
  services:
    "default/gw.default.svc.cluster.local": {}
services:
- name: hostmetrics
  namespace: kube-system
  hostname: hostmetrics.kube-system.svc.cluster.local
  vips: ["/10.96.0.20"]
  ports:
    9000: 15020
- name: gw
  namespace: default
  hostname: gw.default.svc.cluster.local
  vips: ["/10.96.0.21"]
  ports:
    9008: 15008
    15008: 15008
- name: local15006
  namespace: default
  hostname: local15006.default.svc.cluster.local
  vips: ["/10.96.0.22"]
  ports:
    7000: 15006
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/10.96.101.203"]
  ports:
    8000: 80
- name: sickonly
  namespace: default
  hostname: sickonly.default.svc.cluster.local
  vips: ["/10.96.0.9"]
  ports:
    80: 80
- name: viawp
  namespace: default
  hostname: viawp.default.svc.cluster.local
  vips: ["/10.96.0.3"]
  ports:
    8000: 80
  waypoint:
    destination: "/10.244.2.50"
    hboneMtlsPort: 15008
"#,
    )
    .expect("test snapshot parses")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node a's own addresses: its underlay address and its pods' gateway.
fn node_a() -> OwnAddrs {
    OwnAddrs::node([ip("172.31.0.11"), ip("10.244.1.1")])
}

fn route(src: &str, dst: &str, random: u64) -> Result<Route, Denied> {
    route_with(&node_a(), src, dst, random)
}

fn route_with(own: &OwnAddrs, src: &str, dst: &str, random: u64) -> Result<Route, Denied> {
    outbound(
        &snapshot(),
        NODE_A,
        own,
        ip(src),
        sa(dst),
        random,
        &NoResolver,
    )
}

#[test]
fn own_ports_on_own_addresses_are_denied_first() {
    // Loopback (v4, v6, v4-mapped), the unspecified address and node a's addresses, on every
    // one of zring's ports; even from an unknown source, before anything else is looked up.
    let hosts = [
        "127.0.0.1",
        "127.0.0.53",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "172.31.0.11",
        "10.244.1.1",
    ];
    for port in OWN_PORTS {
        for host in hosts {
            let dst = format!("{host}:{port}");
            for src in ["10.244.1.66", "10.244.1.8"] {
                assert_eq!(
                    route(src, &dst, 0).unwrap_err(),
                    Denied::OwnPort(sa(&dst)),
                    "{src} → {dst}"
                );
            }
        }
    }
}

#[test]
fn own_port_numbers_elsewhere_are_ordinary_traffic() {
    for port in OWN_PORTS {
        // A pod on another node (HBONE: a tunnel asking for that port), a TCP pod there, a pod
        // on this node, another node, and an address outside the mesh.
        let r = route("10.244.1.8", &format!("10.244.2.4:{port}"), 0).unwrap();
        let Action::Hbone {
            via,
            authority,
            kind,
            ..
        } = r.action
        else {
            panic!("{:?}", r.action)
        };
        assert_eq!(
            (via, authority, kind),
            (
                sa("10.244.2.4:15008"),
                sa(&format!("10.244.2.4:{port}")),
                TunnelKind::ToServer
            )
        );
        let to = |dst: &str| route("10.244.1.8", dst, 0).unwrap().action;
        let tcpb = format!("10.244.2.7:{port}");
        assert_eq!(to(&tcpb), Action::Direct(sa(&tcpb)));
        let local = format!("10.244.1.9:{port}");
        assert_eq!(to(&local), Action::DirectLocal(sa(&local)));
        for other in ["172.31.0.12", "192.0.2.10", "[2001:db8::1]"] {
            let dst = format!("{other}:{port}");
            assert_eq!(to(&dst), Action::Passthrough(sa(&dst)));
        }
    }
    // Other ports on zring's own addresses are not zring (kubelet, a host-network server).
    for dst in ["172.31.0.11:10250", "10.244.1.1:53", "127.0.0.1:8080"] {
        assert!(route("10.244.1.8", dst, 0).is_ok(), "{dst}");
    }
}

#[test]
fn own_ports_are_judged_after_service_resolution() {
    // 9000 → 15020 on a host-network endpoint whose IP is node a's: zring's metrics, denied on
    // the endpoint's address.
    assert_eq!(
        route("10.244.1.8", "10.96.0.20:9000", 0).unwrap_err(),
        Denied::OwnPort(sa("172.31.0.11:15020"))
    );
    // The decision rests on the addresses given: with others, the same route is ordinary.
    let elsewhere = OwnAddrs::node([ip("172.31.0.12"), ip("10.244.2.1")]);
    let r = route_with(&elsewhere, "10.244.1.8", "10.96.0.20:9000", 0).unwrap();
    assert_eq!(r.action, Action::DirectLocal(sa("172.31.0.11:15020")));
    // A service port mapping to a remote endpoint's 15008 (a gateway): ordinary, whether the
    // service port is 9008 or 15008 itself.
    for dst in ["10.96.0.21:9008", "10.96.0.21:15008"] {
        let r = route("10.244.1.8", dst, 0).unwrap();
        assert_eq!(r.action, Action::Direct(sa("10.244.2.9:15008")), "{dst}");
    }
}

#[test]
fn in_pod_mode_refuses_the_pods_own_proxy_ports_only() {
    let pod = OwnAddrs::pod([ip("10.244.1.9")]);
    let to = |dst: &str| route_with(&pod, "10.244.1.9", dst, 0);
    for port in POD_PORTS {
        for host in ["10.244.1.9", "127.0.0.1", "[::1]"] {
            let dst = format!("{host}:{port}");
            assert_eq!(to(&dst).unwrap_err(), Denied::OwnPort(sa(&dst)), "{dst}");
        }
        // Another pod's, another node's: ordinary.
        let other = format!("10.244.1.8:{port}");
        assert_eq!(to(&other).unwrap().action, Action::DirectLocal(sa(&other)));
        assert!(to(&format!("172.31.0.11:{port}")).is_ok());
    }
    // zring's node-level ports are not in the pod: ordinary there, even toward the pod itself.
    for port in [15000, 15020, 15021] {
        let own = format!("10.244.1.9:{port}");
        assert_eq!(to(&own).unwrap().action, Action::DirectLocal(sa(&own)));
        assert!(to(&format!("127.0.0.1:{port}")).is_ok());
    }
    // A service port that resolves to this pod's 15006 is zring itself; for another pod it
    // is an ordinary connection to appa-local's 15006.
    assert_eq!(
        to("10.96.0.22:7000").unwrap_err(),
        Denied::OwnPort(sa("10.244.1.9:15006"))
    );
    let appa = OwnAddrs::pod([ip("10.244.1.8")]);
    assert_eq!(
        route_with(&appa, "10.244.1.8", "10.96.0.22:7000", 0)
            .unwrap()
            .action,
        Action::DirectLocal(sa("10.244.1.9:15006"))
    );
}

#[test]
fn own_addrs_canonical_and_deduplicated() {
    let own = OwnAddrs::node([ip("::ffff:10.0.0.1"), ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(own.ips(), &[ip("10.0.0.1"), ip("fd00::1")]);
    assert!(own.contains(sa("10.0.0.1:15020")));
    assert!(own.contains(sa("[::ffff:10.0.0.1]:15020")));
    assert!(own.contains(sa("[fd00::1]:15000")));
    assert!(!own.contains(sa("10.0.0.1:15022")));
    assert!(!own.contains(sa("10.0.0.2:15020")));
    // Loopback only until the node's addresses are known.
    let default = OwnAddrs::default();
    assert!(default.contains(sa("127.0.0.1:15021")) && !default.contains(sa("10.0.0.1:15021")));
}

#[test]
fn unknown_source_is_denied() {
    assert_eq!(
        route("10.244.1.66", "10.244.2.4:80", 0).unwrap_err(),
        Denied::UnknownSource("10.244.1.66".parse().unwrap())
    );
}

#[test]
fn hbone_workload_on_another_node_is_tunnelled() {
    let r = route("10.244.1.8", "10.244.2.4:80", 0).unwrap();
    match &r.action {
        Action::Hbone {
            via,
            authority,
            kind,
            peer,
        } => {
            assert_eq!(
                (*via, *authority, *kind),
                (
                    sa("10.244.2.4:15008"),
                    sa("10.244.2.4:80"),
                    TunnelKind::ToServer
                )
            );
            assert_eq!(&*peer.uid, "u-appb");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.action.kind(), "ToServer");
    assert_eq!(&*r.source.uid, "u-appa");
}

#[test]
fn same_node_is_direct_local() {
    let r = route("10.244.1.8", "10.244.1.9:7000", 0).unwrap();
    assert_eq!(r.action, Action::DirectLocal(sa("10.244.1.9:7000")));
}

#[test]
fn tcp_workload_is_direct() {
    assert_eq!(
        route("10.244.1.8", "10.244.2.7:5432", 0).unwrap().action,
        Action::Direct(sa("10.244.2.7:5432"))
    );
}

#[test]
fn unknown_destination_passes_through() {
    let r = route("10.244.1.8", "192.0.2.10:443", 0).unwrap();
    assert_eq!(r.action, Action::Passthrough(sa("192.0.2.10:443")));
    assert!(r.dst_workload.is_none() && r.dst_service.is_none());
}

#[test]
fn service_vip_picks_endpoints_by_capacity_and_maps_ports() {
    // appb has capacity 3, appb2 capacity 1: tickets 0..3 → appb, 3 → appb2.
    let mut seen = std::collections::BTreeMap::new();
    for random in 0..400 {
        let r = route("10.244.1.8", "10.96.101.203:8000", random).unwrap();
        let Action::Hbone { authority, .. } = r.action else {
            panic!("{:?}", r.action)
        };
        *seen.entry(authority).or_insert(0) += 1;
        assert_eq!(r.dst_service.as_ref().map(|s| &*s.name), Some("appb"));
    }
    // appb maps 8000 → 8080 itself; appb2 falls back to the service's 8000 → 80.
    assert_eq!(seen.get(&sa("10.244.2.4:8080")), Some(&300));
    assert_eq!(seen.get(&sa("10.244.2.5:80")), Some(&100));
}

#[test]
fn service_port_not_declared_is_denied() {
    assert!(matches!(
        route("10.244.1.8", "10.96.101.203:9999", 0),
        Err(Denied::NoServicePort { port: 9999, .. })
    ));
}

#[test]
fn service_without_healthy_endpoint_is_denied() {
    assert!(matches!(
        route("10.244.1.8", "10.96.0.9:80", 0),
        Err(Denied::NoHealthyEndpoint(_))
    ));
}

#[test]
fn service_waypoint_keeps_the_vip_as_authority() {
    let r = route("10.244.1.8", "10.96.0.3:8000", 0).unwrap();
    match &r.action {
        Action::Hbone {
            via,
            authority,
            kind,
            peer,
        } => {
            assert_eq!(*via, sa("10.244.2.50:15008"));
            assert_eq!(*authority, sa("10.96.0.3:8000"));
            assert_eq!(*kind, TunnelKind::ToServerWaypoint);
            assert_eq!(&*peer.name, "wp");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.action.kind(), "ToServerWaypoint");
}

#[test]
fn workload_waypoint_is_used_except_by_the_waypoint_itself() {
    let r = route("10.244.1.8", "10.244.2.8:80", 0).unwrap();
    assert_eq!(r.action.kind(), "ToServerWaypoint");
    // The waypoint's own traffic to the workload goes straight to it.
    let r = outbound(
        &snapshot(),
        "b",
        &OwnAddrs::default(),
        "10.244.2.50".parse().unwrap(),
        sa("10.244.2.8:80"),
        0,
        &NoResolver,
    )
    .unwrap();
    assert_eq!(r.action, Action::DirectLocal(sa("10.244.2.8:80")));
}

mod istiod;

mod waypoint_hostname;
