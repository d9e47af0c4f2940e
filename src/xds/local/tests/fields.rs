//! Every field read into the snapshot, and the indexes built from them: policy scopes, service
//! endpoints from workload memberships, IPv4-mapped lookups, host-network workloads.

use crate::state::{Endpoint, LoadBalancerScope};

use super::*;

#[test]
fn every_field() {
    // ztunnel's format exactly (no shorthand), every field it reads.
    let s = strict(
        r#"
workloads:
- uid: Kubernetes//Pod/ns/w1
  name: w1
  namespace: ns
  serviceAccount: sa.with.dots
  trustDomain: example.org
  workloadName: w
  workloadType: deployment
  canonicalName: w
  canonicalRevision: v2
  clusterId: c1
  workloadIps: ["10.0.0.1", "fd00::1"]
  protocol: HBONE
  networkMode: Standard
  network: ""
  node: n1
  hostname: w1.example
  waypoint: {destination: "ns/waypoint.ns.svc.cluster.local", hboneMtlsPort: 15009}
  networkGateway: {destination: "net2/192.168.0.1", hboneMtlsPort: 15008}
  nativeTunnel: true
  applicationTunnel: {protocol: PROXY, port: 15088}
  status: Unhealthy
  authorizationPolicies: [ns/only-w1]
  locality: {region: r1, zone: z1, subzone: s1}
  capacity: 3
  services: {"ns/a.ns.svc": {80: 8080, 443: 8443}}
services:
- name: a
  namespace: ns
  hostname: a.ns.svc
  vips: ["/10.96.0.1", "/fd00:96::1"]
  ports: {80: 0, 443: 443}
  subjectAltNames: [spiffe://example.org/ns/ns/sa/other]
  waypoint: {destination: "/10.96.0.99", hboneMtlsPort: 15008}
  loadBalancer: {routingPreferences: [Region, Zone, Node], mode: Failover, healthPolicy: AllowAll}
  ipFamilies: Dual
  canonical: true
  visibility: Public
  cidrVips: []
  weightedWaypoints: []
  endpoints: {}
policies:
- name: only-w1
  namespace: ns
  scope: WorkloadSelector
  action: Allow
  dryRun: true
  rules:
  - - - namespaces: [!Exact ns]
        notNamespaces: [!Prefix kube-]
        serviceAccounts: [{namespace: ns, serviceAccount: sa}]
        notServiceAccounts: [{namespace: ns, serviceAccount: bad}]
        principals: [!Suffix /sa/sa]
        notPrincipals: [!Presence []]
        sourceIps: [10.0.0.0/8, "fd00::/8"]
        notSourceIps: [10.9.9.9/32]
        destinationIps: [0.0.0.0/0]
        notDestinationIps: ["::/0"]
        destinationPorts: [80, 443]
        notDestinationPorts: [22]
"#,
    );
    let w = s.workload_by_ip(ip("fd00::1")).unwrap();
    assert!(std::ptr::eq(
        &**w,
        &**s.workload_by_ip(ip("10.0.0.1")).unwrap()
    ));
    assert_eq!(
        crate::identity::Identity::of_workload(w).unwrap().as_str(),
        "spiffe://example.org/ns/ns/sa/sa.with.dots"
    );
    let wp = w.waypoint.as_ref().unwrap();
    assert_eq!(
        wp.to_string(),
        "ns/waypoint.ns.svc.cluster.local port 15009"
    );
    assert!(
        matches!(&w.network_gateway.as_ref().unwrap().destination, Destination::Address(a) if &*a.network == "net2")
    );
    assert!(w.native_tunnel);
    assert_eq!(w.application_tunnel.as_ref().unwrap().port, Some(15088));
    assert_eq!(w.status, HealthStatus::Unhealthy);
    assert_eq!(&*w.authorization_policies[0], "ns/only-w1");
    assert_eq!(
        (&*w.locality.region, &*w.locality.zone, &*w.locality.subzone),
        ("r1", "z1", "s1")
    );
    assert_eq!(w.capacity, 3);

    let svc = s.service_by_vip(ip("fd00:96::1")).unwrap();
    let lb = svc.load_balancer.as_ref().unwrap();
    assert_eq!(
        lb.routing_preferences,
        [
            LoadBalancerScope::Region,
            LoadBalancerScope::Zone,
            LoadBalancerScope::Node
        ]
    );
    assert_eq!(
        (lb.mode, lb.health_policy),
        (
            LoadBalancerMode::Failover,
            LoadBalancerHealthPolicy::AllowAll
        )
    );
    assert_eq!(svc.ip_families, Some(IpFamily::Dual));
    assert!(svc.canonical);
    // Unhealthy endpoints are listed; the service's health policy admits them here.
    assert_eq!(svc.endpoints.len(), 1);
    assert!(svc.admits(w.status));
    let ep: &Endpoint = &svc.endpoints[0];
    assert_eq!(
        ep.target_port(svc, 80),
        8080,
        "named target port (0) resolved by the endpoint"
    );

    let p = s.policy("ns/only-w1").unwrap();
    assert!(p.dry_run);
    let m = &p.rules[0][0][0];
    assert_eq!(m.not_principals, [StringMatch::Presence]);
    assert_eq!(m.service_accounts[0].service_account.as_ref(), "sa");
    assert!(m.source_ips[0].contains(ip("10.1.2.3")));
    assert_eq!(m.not_source_ips[0].to_string(), "10.9.9.9/32");
    assert_eq!(m.not_destination_ips[0].to_string(), "::/0");
    assert_eq!(
        (&m.destination_ports[..], &m.not_destination_ports[..]),
        (&[80, 443][..], &[22][..])
    );
    assert!(!m.is_empty());
    // WorkloadSelector policies are reached through the workload, not by namespace.
    assert!(s.namespace_policies("ns").is_empty() && s.global_policies().is_empty());
}

#[test]
fn policy_scopes_are_indexed() {
    let s = ok(r#"
policies:
- {name: g, namespace: istio-system, scope: Global, action: Deny}
- {name: n1, namespace: a, scope: Namespace, action: Allow}
- {name: n2, namespace: a, scope: Namespace, action: Deny}
- {name: n3, namespace: b, scope: Namespace, action: Allow}
- {name: w, namespace: a, scope: WorkloadSelector, action: Allow}
"#);
    let names = |ps: &[std::sync::Arc<Authorization>]| {
        ps.iter().map(|p| p.name.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(s.global_policies()), ["g"]);
    assert_eq!(names(s.namespace_policies("a")), ["n1", "n2"]);
    assert_eq!(names(s.namespace_policies("b")), ["n3"]);
    assert!(s.namespace_policies("c").is_empty());
    assert!(s.policy("a/w").is_some() && s.policy("a/missing").is_none());
    assert_eq!(s.policies().count(), 5);
}

#[test]
fn endpoints_follow_memberships() {
    let s = ok(r#"
workloads:
- {uid: w1, namespace: ns, workloadIps: [10.0.0.1], services: {"ns/a.svc": {80: 8080}, "ns/missing.svc": {80: 80}}}
- {uid: w2, namespace: ns, workloadIps: [10.0.0.2], status: Unhealthy, services: {"ns/a.svc": {80: 9090}}}
- {uid: w3, namespace: ns, workloadIps: [10.0.0.3]}
services:
- {name: a, namespace: ns, hostname: a.svc, vips: [/10.96.0.1], ports: {80: 80}}
- {name: a, namespace: other, hostname: a.svc, vips: [/10.96.0.2], ports: {80: 80}}
"#);
    let a = s.service_by_host("ns", "a.svc").unwrap();
    let eps: Vec<(&str, u16)> = s
        .service_endpoints(a)
        .map(|(w, p)| (&*w.uid, p[&80]))
        .collect();
    assert_eq!(eps, [("w1", 8080), ("w2", 9090)]);
    assert!(
        !a.admits(HealthStatus::Unhealthy),
        "routing filters w2 out by default"
    );
    // Same hostname in another namespace: separate service, no endpoints.
    assert!(
        s.service_by_host("other", "a.svc")
            .unwrap()
            .endpoints
            .is_empty()
    );
    assert_eq!(s.services_by_hostname("a.svc").len(), 2);
    // A membership naming an undefined service is kept on the workload, without an endpoint.
    let w1 = s.workload_by_uid("w1").unwrap();
    assert_eq!(w1.services.len(), 2);
    assert_eq!(s.services_of(w1).count(), 1);
    assert_eq!(s.services_of(s.workload_by_uid("w3").unwrap()).count(), 0);
}

#[test]
fn lookups_canonicalize_ipv4_mapped_addresses() {
    let s = ok(r#"
workloads:
- {uid: w1, namespace: ns, workloadIps: ["::ffff:10.0.0.1"]}
services:
- {name: a, namespace: ns, hostname: a.svc, vips: ["/::ffff:10.96.0.1"]}
"#);
    assert_eq!(
        s.workload_by_uid("w1").unwrap().workload_ips,
        [ip("10.0.0.1")]
    );
    assert!(s.workload_by_ip(ip("10.0.0.1")).is_some());
    assert!(s.workload_by_ip(ip("::ffff:10.0.0.1")).is_some());
    assert!(s.service_by_vip(ip("10.96.0.1")).is_some());
    assert!(s.service_by_vip(ip("::ffff:10.96.0.1")).is_some());
    // Two spellings of one address are one address: both workloads are listed at it.
    let s = ok(
        "workloads:\n- {uid: a, namespace: ns, workloadIps: [10.0.0.1]}\n- {uid: b, namespace: ns, workloadIps: ['::ffff:10.0.0.1']}\n",
    );
    for spelling in ["10.0.0.1", "::ffff:10.0.0.1"] {
        let at: Vec<&str> = s
            .workloads_at(ip(spelling))
            .iter()
            .map(|w| &*w.uid)
            .collect();
        assert_eq!(at, ["a", "b"], "{spelling}");
    }
}

#[test]
fn host_network_workloads_are_not_indexed_by_ip() {
    let s = ok(r#"
workloads:
- {uid: h1, namespace: ns, workloadIps: [172.18.0.2], networkMode: HostNetwork}
- {uid: h2, namespace: ns, workloadIps: [172.18.0.2], networkMode: HostNetwork}
- {uid: p1, namespace: ns, workloadIps: [10.0.0.1]}
"#);
    assert!(s.workload_by_ip(ip("172.18.0.2")).is_none());
    assert!(s.workload_by_uid("h1").is_some() && s.workload_by_uid("h2").is_some());
    assert_eq!(s.workload_count(), 3);
}
