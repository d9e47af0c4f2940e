//! Table tests for the outbound routing decision, on snapshots parsed from local YAML.

use super::*;
use crate::xds::local;

const NODE_A: &str = "a";

/// appa and appa-local on node a; appb (HBONE) and tcpb (TCP) on node b; service appb with
/// two endpoints of different capacity; a waypoint `wp` on node b serving service `viawp`
/// and workload `wpclient-target`.
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
services:
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

fn route(src: &str, dst: &str, random: u64) -> Result<Route, Denied> {
    outbound(&snapshot(), NODE_A, src.parse().unwrap(), sa(dst), random)
}

#[test]
fn own_ports_are_denied_first() {
    for port in OWN_PORTS {
        let r = route("10.244.1.66", &format!("10.244.2.4:{port}"), 0);
        assert_eq!(
            r.unwrap_err(),
            Denied::OwnPort(sa(&format!("10.244.2.4:{port}")))
        );
    }
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
        "10.244.2.50".parse().unwrap(),
        sa("10.244.2.8:80"),
        0,
    )
    .unwrap();
    assert_eq!(r.action, Action::DirectLocal(sa("10.244.2.8:80")));
}
