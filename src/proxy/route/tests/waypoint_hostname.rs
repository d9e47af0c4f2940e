//! Waypoints whose workload is addressed by hostname (istiod's shape for a waypoint deployed
//! behind a ServiceEntry with `resolution: DNS`): the waypoint's name goes through the same
//! `Resolve` hook as a hostname endpoint's, and an unresolved one is `Unresolved` for the
//! caller to resolve; the address dialled for a waypoint with IPs follows the family rules.

use super::*;

/// appa on node a; waypoint workload `wp` known only as `wp.mesh.test`, behind service `wp`
/// (VIP 240.240.9.1); service `byname` uses it by hostname, service `byvip` by its VIP;
/// `dualwp` (v4 and v6 IPs) serves `dual` by hostname.
fn snapshot() -> Snapshot {
    local::parse(
        r#"
workloads:
- uid: u-appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["10.244.1.8", "fd00:244:1::8"]
  protocol: HBONE
  node: a
- uid: Kubernetes/networking.istio.io/ServiceEntry/default/wp/wp.mesh.test
  name: wp
  namespace: default
  serviceAccount: waypoint
  workloadIps: []
  hostname: wp.mesh.test
  protocol: HBONE
  services:
    "default/wp.default.svc.cluster.local":
      15008: 15008
- uid: u-dualwp
  name: dualwp
  namespace: default
  serviceAccount: waypoint
  workloadIps: ["10.244.2.60", "fd00:244:2::60"]
  protocol: HBONE
  node: b
  services:
    "default/dualwp.default.svc.cluster.local":
      15008: 15008
services:
- name: wp
  namespace: default
  hostname: wp.default.svc.cluster.local
  vips: ["/240.240.9.1"]
  ports: {15008: 15008}
- name: dualwp
  namespace: default
  hostname: dualwp.default.svc.cluster.local
  vips: ["/10.96.9.2", "/fd00:96::9:2"]
  ports: {15008: 15008}
- name: byname
  namespace: default
  hostname: byname.default.svc.cluster.local
  vips: ["/10.96.9.10"]
  ports: {80: 8080}
  waypoint: {destination: "default/wp.default.svc.cluster.local", hboneMtlsPort: 15008}
- name: byvip
  namespace: default
  hostname: byvip.default.svc.cluster.local
  vips: ["/10.96.9.11"]
  ports: {80: 8080}
  waypoint: {destination: "/240.240.9.1", hboneMtlsPort: 15008}
- name: dual
  namespace: default
  hostname: dual.default.svc.cluster.local
  vips: ["/10.96.9.12", "/fd00:96::9:12"]
  ports: {80: 8080}
  waypoint: {destination: "default/dualwp.default.svc.cluster.local", hboneMtlsPort: 15008}
"#,
    )
    .expect("waypoint snapshot parses")
}

/// Answers `wp.mesh.test`, in either family.
struct WaypointDns;

impl Resolve for WaypointDns {
    fn resolve(&self, hostname: &str, want_v6: bool) -> Option<IpAddr> {
        (hostname == "wp.mesh.test").then(|| {
            if want_v6 {
                ip("fd00:244:3::20")
            } else {
                ip("10.244.3.20")
            }
        })
    }
}

fn go(dst: &str, resolver: &dyn Resolve) -> Result<Route, Denied> {
    outbound(
        &snapshot(),
        NODE_A,
        &OwnAddrs::default(),
        ip("10.244.1.8"),
        sa(dst),
        0,
        resolver,
    )
}

fn via_and_peer(r: &Route) -> (SocketAddr, SocketAddr, String) {
    match &r.action {
        Action::Hbone {
            via,
            authority,
            kind: TunnelKind::ToServerWaypoint,
            peer,
        } => (*via, *authority, peer.name.to_string()),
        other => panic!("not through a waypoint: {other:?}"),
    }
}

#[test]
fn a_waypoint_known_by_hostname_is_resolved_through_the_hook() {
    for dst in ["10.96.9.10:80", "10.96.9.11:80"] {
        let r = go(dst, &WaypointDns).unwrap();
        assert_eq!(
            via_and_peer(&r),
            (sa("10.244.3.20:15008"), sa(dst), "wp".to_owned()),
            "{dst}: the resolved address, the VIP as authority, the waypoint's identity"
        );
        assert_eq!(
            go(dst, &NoResolver).unwrap_err(),
            Denied::Unroutable(Unroutable::Unresolved {
                workload: "Kubernetes/networking.istio.io/ServiceEntry/default/wp/wp.mesh.test"
                    .into(),
                hostname: "wp.mesh.test".into(),
            }),
            "{dst}: nothing at hand, for the caller to resolve"
        );
    }
}

#[test]
fn a_waypoint_by_hostname_is_reached_in_the_connections_family() {
    let r = go("10.96.9.12:80", &NoResolver).unwrap();
    assert_eq!(via_and_peer(&r).0, sa("10.244.2.60:15008"));
    let r = go("[fd00:96::9:12]:80", &NoResolver).unwrap();
    assert_eq!(via_and_peer(&r).0, sa("[fd00:244:2::60]:15008"));
}
