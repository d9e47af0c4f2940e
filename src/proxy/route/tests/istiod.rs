//! Routing over the shapes istiod sends that zring once refused at the config (NACK): each is
//! now kept, and each connection routes or is refused with its own reason.

use super::*;

/// `client` (default namespace, region r1 zone z1, node a) and `client2` (namespace other) on
/// node a; `twin` shares client's IP on another node. Two workloads share 10.244.9.9, one per
/// network; `netclient` is a source on net2. A ServiceEntry `db.example.com` resolved by DNS
/// (hostname endpoint); headless `hl`; `shared` in two namespaces on one VIP; PASSTHROUGH
/// `ext`; CIDR VIPs `range` (PASSTHROUGH, /24, default), `range25` (/25, other) and
/// `rangeeps` (with endpoints); `near` (FAILOVER region, zone), `pinned` (STRICT node);
/// `remote`, whose only endpoint is behind a network gateway.
fn snapshot() -> Snapshot {
    local::parse(
        r#"
workloads:
- uid: Kubernetes//Pod/default/client
  name: client
  namespace: default
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
  clusterId: c1
  locality: {region: r1, zone: z1, subzone: s1}
  services: {}
- uid: Kubernetes//Pod/other/client2
  name: client2
  namespace: other
  workloadIps: ["10.244.1.10"]
  protocol: HBONE
  node: a
  services: {}
- uid: Kubernetes//Pod/default/twin
  name: twin
  namespace: default
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: z
  services: {}
- uid: Kubernetes//Pod/default/netclient
  name: netclient
  namespace: default
  workloadIps: ["10.244.7.7"]
  network: net2
  node: a
  services: {}
- uid: Kubernetes//Pod/default/dup-here
  name: dup-here
  namespace: default
  workloadIps: ["10.244.9.9"]
  node: b
  services: {}
- uid: Kubernetes//Pod/default/dup-there
  name: dup-there
  namespace: default
  workloadIps: ["10.244.9.9"]
  network: net2
  node: c
  services: {}
- uid: Kubernetes/networking.istio.io/ServiceEntry/default/db/db.example.com
  name: db
  namespace: default
  workloadIps: []
  hostname: db.example.com
  services:
    "default/db.example.com": {}
- uid: Kubernetes//Pod/default/hl-0
  name: hl-0
  namespace: default
  workloadIps: ["10.244.2.30"]
  protocol: HBONE
  node: b
  services:
    "default/hl.default.svc.cluster.local": {}
- uid: Kubernetes//Pod/default/sh-d
  name: sh-d
  namespace: default
  workloadIps: ["10.244.2.51"]
  node: b
  services:
    "default/shared.default.svc.cluster.local": {}
- uid: Kubernetes//Pod/other/sh-o
  name: sh-o
  namespace: other
  workloadIps: ["10.244.2.52"]
  node: b
  services:
    "other/shared.other.svc.cluster.local": {}
- uid: Kubernetes//Pod/default/re
  name: re
  namespace: default
  workloadIps: ["10.244.2.40"]
  node: b
  services:
    "default/rangeeps.example.com": {}
- uid: Kubernetes//Pod/default/near-zone
  name: near-zone
  namespace: default
  workloadIps: ["10.244.3.1"]
  node: b
  locality: {region: r1, zone: z1, subzone: s9}
  services:
    "default/near.default.svc.cluster.local": {}
    "default/pinned.default.svc.cluster.local": {}
- uid: Kubernetes//Pod/default/near-region
  name: near-region
  namespace: default
  workloadIps: ["10.244.3.2"]
  node: c
  locality: {region: r1, zone: z2, subzone: s9}
  services:
    "default/near.default.svc.cluster.local": {}
- uid: Kubernetes//Pod/default/far
  name: far
  namespace: default
  workloadIps: ["10.244.3.3"]
  node: d
  capacity: 1000
  locality: {region: r2, zone: z3, subzone: s9}
  services:
    "default/near.default.svc.cluster.local": {}
- uid: Kubernetes//Pod/default/behind-gw
  name: behind-gw
  namespace: default
  workloadIps: []
  network: net3
  networkGateway:
    destination: "net3/192.0.2.99"
    hboneMtlsPort: 15008
  services:
    "default/remote.default.svc.cluster.local": {}
services:
- name: db
  namespace: default
  hostname: db.example.com
  vips: ["/240.240.0.1"]
  ports: {5432: 5432}
- name: hl
  namespace: default
  hostname: hl.default.svc.cluster.local
  vips: []
  ports: {80: 8080}
- name: shared
  namespace: default
  hostname: shared.default.svc.cluster.local
  vips: ["/10.96.5.5"]
  ports: {80: 8080}
- name: shared
  namespace: other
  hostname: shared.other.svc.cluster.local
  vips: ["/10.96.5.5"]
  ports: {80: 9090}
- name: ext
  namespace: default
  hostname: ext.example.com
  vips: ["/240.240.0.5"]
  ports: {443: 443}
  loadBalancer: {routingPreferences: [], mode: Passthrough, healthPolicy: OnlyHealthy}
- name: range
  namespace: default
  hostname: range.example.com
  vips: []
  cidrVips: [{network: "", cidr: "203.0.113.0/24"}]
  ports: {443: 443}
  loadBalancer: {routingPreferences: [], mode: Passthrough, healthPolicy: OnlyHealthy}
- name: range25
  namespace: other
  hostname: range25.example.com
  vips: []
  cidrVips: [{network: "", cidr: "203.0.113.128/25"}]
  ports: {443: 443}
  loadBalancer: {routingPreferences: [], mode: Passthrough, healthPolicy: OnlyHealthy}
- name: rangeeps
  namespace: default
  hostname: rangeeps.example.com
  vips: []
  cidrVips: [{network: "", cidr: "198.51.100.0/24"}]
  ports: {443: 8443}
- name: near
  namespace: default
  hostname: near.default.svc.cluster.local
  vips: ["/10.96.6.1"]
  ports: {80: 80}
  loadBalancer: {routingPreferences: [Region, Zone], mode: Failover, healthPolicy: OnlyHealthy}
- name: pinned
  namespace: default
  hostname: pinned.default.svc.cluster.local
  vips: ["/10.96.6.2"]
  ports: {80: 80}
  loadBalancer: {routingPreferences: [Node], mode: Strict, healthPolicy: OnlyHealthy}
- name: remote
  namespace: default
  hostname: remote.default.svc.cluster.local
  vips: ["/10.96.6.3"]
  ports: {80: 80}
"#,
    )
    .expect("istiod-shaped snapshot parses")
}

/// Answers `db.example.com` only.
struct Known;

impl Resolve for Known {
    fn resolve(&self, hostname: &str, want_v6: bool) -> Option<IpAddr> {
        (hostname == "db.example.com" && !want_v6).then(|| ip("192.0.2.44"))
    }
}

fn go(src: &str, dst: &str, random: u64, resolver: &dyn Resolve) -> Result<Route, Denied> {
    outbound(
        &snapshot(),
        NODE_A,
        &node_a(),
        ip(src),
        sa(dst),
        random,
        resolver,
    )
}

fn via(src: &str, dst: &str) -> Result<Route, Denied> {
    go(src, dst, 0, &NoResolver)
}

fn service_name(r: &Route) -> Option<String> {
    r.dst_service
        .as_ref()
        .map(|s| format!("{}/{}", s.namespace, s.name))
}

#[test]
fn hostname_endpoints_resolve_through_the_hook_or_are_unroutable() {
    let r = go("10.244.1.8", "240.240.0.1:5432", 0, &Known).unwrap();
    assert_eq!(r.action, Action::Direct(sa("192.0.2.44:5432")));
    assert_eq!(
        r.dst_workload.as_deref().map(|w| &*w.name),
        Some("db"),
        "the hostname workload is the destination"
    );
    assert!(r.choice.is_some());
    assert_eq!(
        via("10.244.1.8", "240.240.0.1:5432").unwrap_err(),
        Denied::Unroutable(Unroutable::Unresolved {
            workload: "Kubernetes/networking.istio.io/ServiceEntry/default/db/db.example.com"
                .into(),
            hostname: "db.example.com".into(),
        })
    );
}

#[test]
fn headless_endpoints_route_by_their_own_ip() {
    let r = via("10.244.1.8", "10.244.2.30:8080").unwrap();
    assert_eq!(r.action.kind(), "ToServer");
    assert_eq!(r.dst_workload.as_deref().map(|w| &*w.name), Some("hl-0"));
    assert!(r.dst_service.is_none());
    let s = snapshot();
    let hl = s
        .service_by_host("default", "hl.default.svc.cluster.local")
        .unwrap();
    assert!(hl.is_headless());
    assert_eq!(hl.endpoints.len(), 1);
}

#[test]
fn several_services_on_one_vip_prefer_the_clients_namespace() {
    let r = via("10.244.1.8", "10.96.5.5:80").unwrap();
    assert_eq!(service_name(&r).as_deref(), Some("default/shared"));
    assert_eq!(r.action, Action::Direct(sa("10.244.2.51:8080")));
    let r = via("10.244.1.10", "10.96.5.5:80").unwrap();
    assert_eq!(service_name(&r).as_deref(), Some("other/shared"));
    assert_eq!(r.action, Action::Direct(sa("10.244.2.52:9090")));
}

#[test]
fn passthrough_services_go_to_the_original_destination() {
    let r = via("10.244.1.8", "240.240.0.5:443").unwrap();
    assert_eq!(r.action, Action::Passthrough(sa("240.240.0.5:443")));
    assert_eq!(service_name(&r).as_deref(), Some("default/ext"));
    assert!(r.dst_workload.is_none() && r.choice.is_none());
}

#[test]
fn cidr_vips_match_by_namespace_then_longest_prefix() {
    // 203.0.113.200 is in both /24 (default) and /25 (other).
    let cases = [
        ("10.244.1.8", "203.0.113.200:443", "default/range"),
        ("10.244.1.10", "203.0.113.200:443", "other/range25"),
        ("10.244.1.10", "203.0.113.5:443", "default/range"),
    ];
    for (src, dst, want) in cases {
        let r = via(src, dst).unwrap();
        assert_eq!(service_name(&r).as_deref(), Some(want), "{src} → {dst}");
        assert_eq!(r.action, Action::Passthrough(sa(dst)), "{src} → {dst}");
    }
    // A CIDR VIP with endpoints balances over them like any service.
    let r = via("10.244.1.8", "198.51.100.77:443").unwrap();
    assert_eq!(service_name(&r).as_deref(), Some("default/rangeeps"));
    assert_eq!(r.action, Action::Direct(sa("10.244.2.40:8443")));
    // Outside every range: plain passthrough, no service.
    let r = via("10.244.1.8", "203.0.114.1:443").unwrap();
    assert!(r.dst_service.is_none());
}

#[test]
fn one_ip_on_two_networks_is_looked_up_on_the_sources_network() {
    let r = via("10.244.1.8", "10.244.9.9:80").unwrap();
    assert_eq!(
        r.dst_workload.as_deref().map(|w| &*w.name),
        Some("dup-here")
    );
    assert_eq!(r.action, Action::Direct(sa("10.244.9.9:80")));
    let r = via("10.244.7.7", "10.244.9.9:80").unwrap();
    assert_eq!(
        r.dst_workload.as_deref().map(|w| &*w.name),
        Some("dup-there")
    );
    // The source is this node's workload at its IP, not the twin elsewhere.
    let r = via("10.244.1.8", "192.0.2.1:80").unwrap();
    assert_eq!(&*r.source.name, "client");
    let r = outbound(
        &snapshot(),
        "z",
        &OwnAddrs::default(),
        ip("10.244.1.8"),
        sa("192.0.2.1:80"),
        0,
        &NoResolver,
    )
    .unwrap();
    assert_eq!(&*r.source.name, "twin");
}

#[test]
fn locality_preferences_choose_the_endpoint() {
    // FAILOVER on region, zone: always the same-zone endpoint, whatever far's capacity.
    for random in 0..50 {
        let r = go("10.244.1.8", "10.96.6.1:80", random, &NoResolver).unwrap();
        assert_eq!(
            r.dst_workload.as_deref().map(|w| &*w.name),
            Some("near-zone")
        );
        let c = r.choice.unwrap();
        assert_eq!((c.matched, c.preferences, c.tier, c.eligible), (2, 2, 1, 3));
    }
    // STRICT on node: client is on node a, near-zone on b.
    assert_eq!(
        via("10.244.1.8", "10.96.6.2:80").unwrap_err(),
        Denied::NoHealthyEndpoint("pinned.default.svc.cluster.local".into())
    );
}

#[test]
fn network_gateway_endpoints_are_unroutable() {
    assert_eq!(
        via("10.244.1.8", "10.96.6.3:80").unwrap_err(),
        Denied::Unroutable(Unroutable::NetworkGateway {
            workload: "Kubernetes//Pod/default/behind-gw".into(),
            network: "net3".into(),
        })
    );
}

/// The same shapes as istiod encodes them, through the xDS resource map: accepted, and each
/// connection routes or is refused as the local-config snapshot above does.
#[test]
fn xds_shapes_route_or_refuse_per_connection() {
    let mut set = crate::xds::resources::ResourceSet::new();
    let applied = set.apply(
        crate::xds::resources::Kind::Address,
        crate::xds::resources::tests::istiod_shapes(),
        vec![],
    );
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    let s = applied.snapshot.unwrap();
    let route = |dst: &str, resolver: &dyn Resolve| {
        outbound(
            &s,
            "node-a",
            &OwnAddrs::default(),
            ip("10.244.1.8"),
            sa(dst),
            0,
            resolver,
        )
    };
    // ServiceEntry with DNS endpoints: resolved through the hook, else refused.
    assert_eq!(
        route("240.240.0.1:5432", &Known).unwrap().action,
        Action::Direct(sa("192.0.2.44:5432"))
    );
    assert!(matches!(
        route("240.240.0.1:5432", &NoResolver),
        Err(Denied::Unroutable(Unroutable::Unresolved { .. }))
    ));
    // Headless: by the pod's own IP, over HBONE.
    assert_eq!(
        route("10.244.2.30:8080", &NoResolver)
            .unwrap()
            .action
            .kind(),
        "ToServer"
    );
    // Two services on one VIP: the client's namespace.
    assert_eq!(
        route("10.96.5.5:80", &NoResolver).unwrap().action,
        Action::Direct(sa("10.244.2.51:8080"))
    );
    // PASSTHROUGH and a CIDR VIP (itself PASSTHROUGH): the original destination.
    for dst in ["240.240.0.5:443", "203.0.113.9:443"] {
        let r = route(dst, &NoResolver).unwrap();
        assert_eq!(r.action, Action::Passthrough(sa(dst)));
        assert!(r.dst_service.is_some(), "{dst}");
    }
    // One IP on two networks: the client's network.
    let r = route("10.244.9.9:80", &NoResolver).unwrap();
    assert_eq!(
        r.dst_workload.as_deref().map(|w| &*w.name),
        Some("dup-here")
    );
}

/// A service with endpoints on both networks: zring picks the one it can reach, never the one
/// behind the other network's gateway.
#[test]
fn reachable_endpoints_are_preferred_to_gateway_ones() {
    let s = local::parse(
        r#"
workloads:
- {uid: c, namespace: default, workloadIps: ["10.244.1.8"], node: a, services: {}}
- uid: remote
  namespace: default
  workloadIps: []
  network: net3
  capacity: 1000
  networkGateway: {destination: "net3/192.0.2.99", hboneMtlsPort: 15008}
  services: {"default/mixed.default.svc.cluster.local": {}}
- uid: local
  namespace: default
  workloadIps: ["10.244.2.9"]
  node: b
  services: {"default/mixed.default.svc.cluster.local": {}}
services:
- {name: mixed, namespace: default, hostname: mixed.default.svc.cluster.local, vips: ["/10.96.7.7"], ports: {80: 80}}
"#,
    )
    .unwrap();
    for random in 0..100 {
        let r = outbound(
            &s,
            NODE_A,
            &node_a(),
            ip("10.244.1.8"),
            sa("10.96.7.7:80"),
            random,
            &NoResolver,
        )
        .unwrap();
        assert_eq!(r.action, Action::Direct(sa("10.244.2.9:80")));
    }
}

/// What zring keeps but cannot route is refused with its own flag: 503 on HBONE (RST on the
/// plaintext listeners), `UNROUTABLE`, zring's own side.
#[test]
fn unroutable_is_reported_with_its_own_flag() {
    use crate::net::Side;
    use crate::proxy::{Answer, Report};
    let e = crate::proxy::Error::Denied(Denied::Unroutable(Unroutable::NoAddress("w".into())));
    assert_eq!(
        e.report(),
        Report {
            answer: Answer::Refuse(http::StatusCode::SERVICE_UNAVAILABLE),
            flags: "UNROUTABLE",
            side: Side::Internal,
        }
    );
    assert_eq!(
        e.to_string(),
        "refused: unroutable: workload w has no address, hostname or network gateway"
    );
}
