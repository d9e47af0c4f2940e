//! Tests for the local config source: the seed cluster, ztunnel's own example, defaults, every
//! validation error (each message must name its culprit), string matches, hostile input, and
//! `LocalSource` change tracking.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::state::{Endpoint, LoadBalancerScope};

const SEED: &str = include_str!("../../../tests/data/seed-two-nodes.yaml");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ok(yaml: &str) -> Snapshot {
    parse(yaml).unwrap_or_else(|e| panic!("{e}\n--- input ---\n{yaml}"))
}

fn err(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(case: &str, yaml: &str, wants: &[&str]) {
    let msg = err(yaml);
    for want in wants {
        assert!(msg.contains(want), "{case}: message {msg:?} lacks {want:?}");
    }
}

#[test]
fn seed_cluster() {
    let s = ok(SEED);
    assert_eq!(
        (s.workload_count(), s.service_count(), s.policy_count()),
        (2, 1, 1)
    );

    let appa = s.workload_by_ip(ip("10.244.1.8")).expect("appa by IP");
    assert_eq!(&*appa.name, "appa-bf7c45dcb-lmtg2");
    assert_eq!(&*appa.node, "ambient-worker");
    assert_eq!(appa.identity(), "spiffe://cluster.local/ns/default/sa/appa");
    assert!(appa.services.is_empty());

    let appb = s.workload_by_ip(ip("10.244.2.4")).expect("appb by IP");
    assert_eq!(&*appb.uid, "Kubernetes//Pod/default/appb-76b56f7cb4-qkjl7");
    assert!(
        std::ptr::eq(&**appb, &**s.workload_by_uid(&appb.uid).unwrap()),
        "one Arc per workload"
    );
    assert_eq!(appb.protocol, Protocol::Hbone);
    assert_eq!(
        (&*appb.workload_name, &*appb.workload_type),
        ("appb", "deployment")
    );
    assert_eq!(
        (&*appb.canonical_name, &*appb.canonical_revision),
        ("appb", "v1")
    );
    assert_eq!(&*appb.cluster_id, "Kubernetes");
    assert_eq!(
        appb.services[0].to_string(),
        "default/appb.default.svc.cluster.local"
    );
    assert!(s.workload_by_ip(ip("10.244.2.5")).is_none());

    let svc = s
        .service_by_vip(ip("10.96.101.203"))
        .expect("service by VIP");
    assert_eq!((&*svc.name, &*svc.namespace), ("appb", "default"));
    assert_eq!(svc.target_port(8000), Some(80));
    assert_eq!(
        &*svc.subject_alt_names[0],
        "spiffe://cluster.local/ns/default/sa/appb"
    );
    let by_host = s
        .service_by_host("default", "appb.default.svc.cluster.local")
        .unwrap();
    assert!(std::ptr::eq(&**svc, &**by_host));
    assert!(
        s.service_by_host("other", "appb.default.svc.cluster.local")
            .is_none()
    );

    let eps: Vec<_> = s.service_endpoints(svc).collect();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].0.uid, appb.uid);
    assert_eq!(eps[0].1.get(&8000), Some(&80));
    assert_eq!(svc.endpoints[0].target_port(svc, 8000), 80);
    assert_eq!(s.services_of(appb).count(), 1);

    let p = s.policy("default/appb-allow-appa").expect("policy by key");
    assert_eq!(
        (p.scope, p.action, p.dry_run),
        (PolicyScope::Namespace, PolicyAction::Allow, false)
    );
    assert_eq!(
        p.rules[0][0][0].principals,
        vec![StringMatch::Exact(
            "cluster.local/ns/default/sa/appa".into()
        )]
    );
    assert_eq!(s.namespace_policies("default").len(), 1);
    assert!(s.global_policies().is_empty());
}

/// ztunnel's `examples/localhost.yaml` (same shape): a non-default VIP network, a policy with
/// `notDestinationPorts` and no `dryRun`, endpoints in two services.
#[test]
fn ztunnel_localhost_example() {
    let s = ok(r#"
workloads:
- uid: cluster1//v1/Pod/default/local
  name: local
  namespace: default
  serviceAccount: default
  workloadIps: ["127.0.0.1"]
  protocol: HBONE
  node: local
  network: ""
  services:
    "default/example.com":
      80: 8080
    "default/example2.com":
      80: 8080
- uid: cluster1//v1/Pod/default/local-tcp
  name: local-tcp
  namespace: default
  serviceAccount: default
  workloadIps: ["127.0.0.2"]
  protocol: TCP
  node: local
  network: ""
  services:
    "default/example.com":
      80: 8080
policies:
  - action: Allow
    rules:
    - - - notDestinationPorts:
          - 9999
    name: deny-9999
    namespace: default
    scope: Namespace
services:
- name: local
  namespace: default
  hostname: example.com
  vips:
    - /127.10.0.1
  ports:
    80: 8080
  subjectAltNames:
   - spiffe://cluster.local/ns/default/sa/local
- name: remote
  namespace: default
  hostname: example2.com
  vips:
    - remote/127.10.0.2
  ports:
    80: 8080
"#);
    let local = s.service_by_vip(ip("127.10.0.1")).unwrap();
    let names: Vec<&str> = local.endpoints.iter().map(|e| &*e.workload.name).collect();
    assert_eq!(
        names,
        ["local", "local-tcp"],
        "endpoints keep workload order"
    );
    let remote = s.service_by_vip(ip("127.10.0.2")).unwrap();
    assert_eq!(&*remote.vips[0].network, "remote");
    assert_eq!(remote.endpoints.len(), 1);
    assert_eq!(
        s.policy("default/deny-9999").unwrap().rules[0][0][0].not_destination_ports,
        [9999]
    );
}

#[test]
fn empty_documents_are_empty_snapshots() {
    for doc in [
        "",
        "\n",
        "# only a comment\n",
        "{}",
        "~",
        "null",
        "workloads: []",
        "---\n",
    ] {
        let s = ok(doc);
        assert!(s.is_empty(), "{doc:?}");
        assert!(s.workload_by_ip(ip("10.0.0.1")).is_none());
    }
    assert!(Snapshot::empty().is_empty());
}

#[test]
fn defaults() {
    let s = ok("workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1]}\n");
    let w = s.workload_by_uid("u1").unwrap();
    assert_eq!(&*w.service_account, "default");
    assert_eq!(&*w.trust_domain, "cluster.local");
    assert_eq!(&*w.cluster_id, "Kubernetes");
    assert_eq!(w.capacity, 1);
    assert_eq!(w.protocol, Protocol::Tcp);
    assert_eq!(w.status, HealthStatus::Healthy);
    assert_eq!(w.network_mode, NetworkMode::Standard);
    assert_eq!((&*w.network, &*w.node, &*w.name), ("", "", ""));
    assert!(w.waypoint.is_none() && w.application_tunnel.is_none() && !w.native_tunnel);
    assert_eq!(w.identity(), "spiffe://cluster.local/ns/ns/sa/default");

    // Explicit empty strings take the defaults too (the workload API treats "" as unset).
    let s = ok(
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], serviceAccount: '', trustDomain: '', clusterId: ''}\n",
    );
    let w = s.workload_by_uid("u1").unwrap();
    assert_eq!(
        (&*w.service_account, &*w.trust_domain, &*w.cluster_id),
        ("default", "cluster.local", "Kubernetes")
    );

    let s = ok(
        "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: [/10.96.0.1], waypoint: {destination: ns/wp.ns.svc}}\n",
    );
    let svc = s.service_by_vip(ip("10.96.0.1")).unwrap();
    assert_eq!(svc.waypoint.as_ref().unwrap().hbone_mtls_port, 15008);
    assert!(svc.ports.is_empty() && svc.load_balancer.is_none() && !svc.canonical);

    let s = ok("policies:\n- {name: p, namespace: ns, scope: Global, action: Deny}\n");
    let p = s.policy("ns/p").unwrap();
    assert!(!p.dry_run && p.rules.is_empty());
}

#[test]
fn every_field() {
    let s = ok(r#"
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
  networkGateway: {destination: "net2/192.168.0.1"}
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
policies:
- name: only-w1
  namespace: ns
  scope: WorkloadSelector
  action: Allow
  dryRun: true
  rules:
  - - - namespaces: [{Exact: ns}]
        notNamespaces: [{Prefix: kube-}]
        serviceAccounts: [{namespace: ns, serviceAccount: sa}]
        notServiceAccounts: [{namespace: ns, serviceAccount: bad}]
        principals: [{Suffix: /sa/sa}]
        notPrincipals: [{Presence: []}]
        sourceIps: [10.0.0.0/8, "fd00::/8"]
        notSourceIps: [10.9.9.9]
        destinationIps: [0.0.0.0/0]
        notDestinationIps: ["::/0"]
        destinationPorts: [80, 443]
        notDestinationPorts: [22]
"#);
    let w = s.workload_by_ip(ip("fd00::1")).unwrap();
    assert!(std::ptr::eq(
        &**w,
        &**s.workload_by_ip(ip("10.0.0.1")).unwrap()
    ));
    assert_eq!(w.identity(), "spiffe://example.org/ns/ns/sa/sa.with.dots");
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
    // Two spellings of one address are one address.
    assert_err(
        "mapped duplicate",
        "workloads:\n- {uid: a, namespace: ns, workloadIps: [10.0.0.1]}\n- {uid: b, namespace: ns, workloadIps: ['::ffff:10.0.0.1']}\n",
        &["\"a\"", "\"b\"", "10.0.0.1"],
    );
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

const W: &str = "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1]";
const SVC: &str = "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: [/10.96.0.1]";
const POL: &str = "policies:\n- {name: p, namespace: ns, scope: Namespace, action: Allow";

/// `W`/`SVC`/`POL` with extra flow-map fields appended.
fn with(base: &str, extra: &str) -> String {
    format!("{base}{extra}}}\n")
}

#[test]
fn validation_errors_name_the_culprit() {
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        // workloads
        (
            "bad workload IP",
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1, 10.0.0.300]}\n".into(),
            vec!["workload \"u1\"", "workloadIps", "10.0.0.300", "not an IP"],
        ),
        (
            "no IPs",
            "workloads:\n- {uid: u1, namespace: ns}\n".into(),
            vec!["workload \"u1\"", "workloadIps", "at least one IP"],
        ),
        (
            "empty uid",
            "workloads:\n- {name: pod-a, namespace: ns, workloadIps: [10.0.0.1]}\n".into(),
            vec!["workload #0", "pod-a", "uid", "empty"],
        ),
        (
            "duplicate IP",
            format!("{W}}}\n- {{uid: u2, namespace: ns, workloadIps: [10.0.0.2, 10.0.0.1]}}\n"),
            vec!["\"u1\"", "\"u2\"", "10.0.0.1"],
        ),
        (
            "duplicate uid",
            format!("{W}}}\n- {{uid: u1, namespace: ns, workloadIps: [10.0.0.2]}}\n"),
            vec!["\"u1\"", "more than one"],
        ),
        (
            "services key form",
            with(W, ", services: {appb: {80: 8080}}"),
            vec![
                "workload \"u1\"",
                "services",
                "\"appb\"",
                "namespace/hostname",
            ],
        ),
        (
            "services key namespace",
            with(W, ", services: {\"Bad_NS/h.svc\": {80: 8080}}"),
            vec!["workload \"u1\"", "services", "Bad_NS"],
        ),
        (
            "services key hostname",
            with(W, ", services: {\"ns/h svc\": {80: 8080}}"),
            vec!["workload \"u1\"", "services", "h svc"],
        ),
        (
            "membership port 0",
            with(W, ", services: {\"ns/h.svc\": {0: 80}}"),
            vec!["workload \"u1\"", "services", "0 -> 80", "1-65535"],
        ),
        (
            "membership target 0",
            with(W, ", services: {\"ns/h.svc\": {80: 0}}"),
            vec!["workload \"u1\"", "80 -> 0"],
        ),
        (
            "membership port range",
            with(W, ", services: {\"ns/h.svc\": {70000: 80}}"),
            vec!["workloads[0].services", "70000", "u16"],
        ),
        (
            "membership duplicate port",
            with(W, ", services: {\"ns/h.svc\": {80: 1, 80: 2}}"),
            vec!["workload \"u1\"", "port 80 twice"],
        ),
        (
            "membership duplicate key",
            with(
                W,
                ", services: {\"ns/h.svc\": {80: 1}, \"ns/h.svc\": {81: 1}}",
            ),
            vec!["workload \"u1\"", "\"ns/h.svc\" twice"],
        ),
        (
            "namespace slash",
            "workloads:\n- {uid: u1, namespace: a/b, workloadIps: [10.0.0.1]}\n".into(),
            vec!["workload \"u1\"", "namespace", "\"a/b\""],
        ),
        (
            "namespace space",
            "workloads:\n- {uid: u1, namespace: 'a b', workloadIps: [10.0.0.1]}\n".into(),
            vec!["namespace", "\"a b\""],
        ),
        (
            "namespace NUL",
            "workloads:\n- {uid: u1, namespace: \"a\\0b\", workloadIps: [10.0.0.1]}\n".into(),
            vec!["namespace", "\"a\\0b\""],
        ),
        (
            "namespace missing",
            "workloads:\n- {uid: u1, workloadIps: [10.0.0.1]}\n".into(),
            vec!["workload \"u1\"", "namespace", "must not be empty"],
        ),
        (
            "namespace uppercase",
            "workloads:\n- {uid: u1, namespace: Prod, workloadIps: [10.0.0.1]}\n".into(),
            vec!["namespace", "\"Prod\"", "lowercase"],
        ),
        (
            "service account slash",
            with(W, ", serviceAccount: 'x/y'"),
            vec!["workload \"u1\"", "serviceAccount", "\"x/y\""],
        ),
        (
            "service account case",
            with(W, ", serviceAccount: Admin"),
            vec!["serviceAccount", "\"Admin\""],
        ),
        (
            "trust domain slash",
            with(W, ", trustDomain: 'td/ns/evil'"),
            vec!["workload \"u1\"", "trustDomain", "td/ns/evil"],
        ),
        (
            "trust domain space",
            with(W, ", trustDomain: 'a b'"),
            vec!["trustDomain", "\"a b\""],
        ),
        (
            "control char in name",
            with(W, ", name: \"a\\nb\""),
            vec!["workload \"u1\"", "name", "control characters"],
        ),
        (
            "control char in revision",
            with(W, ", canonicalRevision: \"v1\\r\""),
            vec!["canonicalRevision", "control characters"],
        ),
        (
            "network slash",
            with(W, ", network: 'a/b'"),
            vec!["workload \"u1\"", "network", "'/'"],
        ),
        (
            "waypoint destination",
            with(W, ", waypoint: {destination: nothing}"),
            vec!["workload \"u1\"", "waypoint", "\"nothing\"", "neither"],
        ),
        (
            "waypoint port 0",
            with(W, ", waypoint: {destination: /10.0.0.9, hboneMtlsPort: 0}"),
            vec!["workload \"u1\"", "waypoint", "hboneMtlsPort 0"],
        ),
        (
            "waypoint namespace",
            with(W, ", waypoint: {destination: 'NS/wp.svc'}"),
            vec!["workload \"u1\"", "waypoint", "\"NS\""],
        ),
        (
            "waypoint missing destination",
            with(W, ", waypoint: {hboneMtlsPort: 15008}"),
            vec!["workloads[0].waypoint", "missing field `destination`"],
        ),
        (
            "network gateway",
            with(W, ", networkGateway: {destination: 'x'}"),
            vec!["networkGateway", "\"x\""],
        ),
        (
            "policy ref",
            with(W, ", authorizationPolicies: [nope]"),
            vec![
                "workload \"u1\"",
                "authorizationPolicies",
                "\"nope\"",
                "namespace/name",
            ],
        ),
        (
            "protocol spelling",
            with(W, ", protocol: tcp"),
            vec![
                "workloads[0].protocol",
                "unknown variant `tcp`",
                "TCP",
                "HBONE",
            ],
        ),
        (
            "status spelling",
            with(W, ", status: Ready"),
            vec!["workloads[0].status", "Ready"],
        ),
        (
            "capacity negative",
            with(W, ", capacity: -1"),
            vec!["workloads[0].capacity"],
        ),
        (
            "IPs not a list",
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: 10.0.0.1}\n".into(),
            vec!["workloads[0].workloadIps", "a list"],
        ),
        // services
        (
            "no VIPs",
            "services:\n- {name: a, namespace: ns, hostname: a.ns.svc}\n".into(),
            vec!["service \"ns/a.ns.svc\"", "vips", "at least one VIP"],
        ),
        (
            "empty VIP list",
            "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: []}\n".into(),
            vec!["service \"ns/a.ns.svc\"", "vips"],
        ),
        (
            "no hostname",
            "services:\n- {name: a, namespace: ns, vips: [/10.96.0.1]}\n".into(),
            vec!["service \"ns/\"", "hostname", "must not be empty"],
        ),
        (
            "no name",
            "services:\n- {namespace: ns, hostname: a.ns.svc, vips: [/10.96.0.1]}\n".into(),
            vec!["service \"ns/a.ns.svc\"", "name", "must not be empty"],
        ),
        (
            "service namespace",
            "services:\n- {name: a, namespace: 'n s', hostname: a.ns.svc, vips: [/10.96.0.1]}\n"
                .into(),
            vec!["service \"n s/a.ns.svc\"", "namespace"],
        ),
        (
            "VIP without network",
            "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: [10.96.0.1]}\n".into(),
            vec![
                "service \"ns/a.ns.svc\"",
                "vips",
                "\"10.96.0.1\"",
                "network/IP",
            ],
        ),
        (
            "VIP bad IP",
            "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: [/10.96.0.x]}\n"
                .into(),
            vec!["service \"ns/a.ns.svc\"", "vips", "/10.96.0.x"],
        ),
        (
            "service port 0",
            with(SVC, ", ports: {0: 80}"),
            vec!["service \"ns/a.ns.svc\"", "ports", "service port 0"],
        ),
        (
            "service port range",
            with(SVC, ", ports: {80: 65536}"),
            vec!["services[0].ports", "65536"],
        ),
        (
            "service duplicate port",
            with(SVC, ", ports: {80: 1, 80: 2}"),
            vec!["service \"ns/a.ns.svc\"", "port 80 twice"],
        ),
        (
            "empty SAN",
            with(SVC, ", subjectAltNames: ['']"),
            vec!["service \"ns/a.ns.svc\"", "subjectAltNames"],
        ),
        (
            "service waypoint",
            with(SVC, ", waypoint: {destination: bad}"),
            vec!["service \"ns/a.ns.svc\"", "waypoint", "\"bad\""],
        ),
        (
            "duplicate service",
            format!(
                "{SVC}}}\n- {{name: b, namespace: ns, hostname: a.ns.svc, vips: [/10.96.0.2]}}\n"
            ),
            vec!["\"ns/a.ns.svc\"", "more than once"],
        ),
        (
            "duplicate VIP",
            format!(
                "{SVC}}}\n- {{name: b, namespace: ns, hostname: b.ns.svc, vips: [/10.96.0.1]}}\n"
            ),
            vec!["10.96.0.1", "\"ns/a.ns.svc\"", "\"ns/b.ns.svc\""],
        ),
        (
            "load balancer mode",
            with(SVC, ", loadBalancer: {mode: Sticky}"),
            vec!["services[0].loadBalancer.mode", "Sticky"],
        ),
        // policies
        (
            "CIDR prefix",
            with(POL, ", rules: [[[{sourceIps: [10.0.0.0/33]}]]]"),
            vec![
                "policy \"ns/p\"",
                "sourceIps",
                "\"10.0.0.0/33\"",
                "longer than 32 bits",
            ],
        ),
        (
            "CIDR address",
            with(POL, ", rules: [[[{notDestinationIps: [banana]}]]]"),
            vec![
                "policy \"ns/p\"",
                "notDestinationIps",
                "\"banana\"",
                "not an IP",
            ],
        ),
        (
            "CIDR v6 prefix",
            with(POL, ", rules: [[[{destinationIps: ['fd00::/200']}]]]"),
            vec!["destinationIps", "longer than 128"],
        ),
        (
            "CIDR syntax",
            with(POL, ", rules: [[[{notSourceIps: ['10.0.0.0/+8']}]]]"),
            vec!["notSourceIps", "decimal"],
        ),
        (
            "policy port 0",
            with(POL, ", rules: [[[{destinationPorts: [0]}]]]"),
            vec!["policy \"ns/p\"", "destinationPorts", "contains 0"],
        ),
        (
            "policy not-port 0",
            with(POL, ", rules: [[[{notDestinationPorts: [0]}]]]"),
            vec!["policy \"ns/p\"", "notDestinationPorts"],
        ),
        (
            "policy port range",
            with(POL, ", rules: [[[{destinationPorts: [65536]}]]]"),
            vec!["destinationPorts", "65536"],
        ),
        (
            "policy missing scope",
            "policies:\n- {name: p, namespace: ns, action: Allow}\n".into(),
            vec!["policies[0]", "missing field `scope`"],
        ),
        (
            "policy action",
            "policies:\n- {name: p, namespace: ns, scope: Namespace, action: Permit}\n".into(),
            vec!["policies[0].action", "unknown variant `Permit`", "Allow"],
        ),
        (
            "policy name slash",
            "policies:\n- {name: a/b, namespace: ns, scope: Namespace, action: Allow}\n".into(),
            vec!["policy \"ns/a/b\"", "name", "\"a/b\""],
        ),
        (
            "policy namespace",
            "policies:\n- {name: p, scope: Namespace, action: Allow}\n".into(),
            vec!["policy \"/p\"", "namespace", "must not be empty"],
        ),
        (
            "duplicate policy",
            format!("{POL}}}\n- {{name: p, namespace: ns, scope: Global, action: Deny}}\n"),
            vec!["\"ns/p\"", "more than once"],
        ),
        (
            "rules shape",
            with(POL, ", rules: [{principals: []}]"),
            vec!["policies[0].rules[0]", "a list"],
        ),
        // documents
        (
            "multiple documents",
            "---\n{}\n---\n{}\n".into(),
            vec!["more than one document"],
        ),
        (
            "old list format",
            "- name: local\n  workloadIp: 127.0.0.1\n".into(),
            vec!["invalid local config", "expected struct"],
        ),
        (
            "tab indentation",
            "workloads:\n\t- uid: a\n".into(),
            vec!["invalid local config", "line 2"],
        ),
    ];
    for (case, yaml, wants) in &cases {
        assert_err(case, yaml, wants);
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "top level",
            "workload: []\n",
            &["unknown field `workload`", "workloads"],
        ),
        (
            "workload",
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], serviceAcount: x}\n",
            &["workloads[0]", "serviceAcount"],
        ),
        (
            "old workloadIp",
            "workloads:\n- {uid: u1, namespace: ns, workloadIp: 10.0.0.1}\n",
            &["workloads[0]", "workloadIp"],
        ),
        (
            "locality",
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], locality: {city: x}}\n",
            &["workloads[0].locality", "city"],
        ),
        (
            "gateway",
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], waypoint: {destination: /10.0.0.9, port: 1}}\n",
            &["workloads[0].waypoint", "port"],
        ),
        (
            "service",
            "services:\n- {name: a, namespace: ns, hostname: a, vips: [/10.96.0.1], vip: x}\n",
            &["services[0]", "`vip`"],
        ),
        (
            "service endpoints",
            "services:\n- {name: a, namespace: ns, hostname: a, vips: [/10.96.0.1], endpoints: {}}\n",
            &["services[0]", "endpoints"],
        ),
        (
            "load balancer",
            "services:\n- {name: a, namespace: ns, hostname: a, vips: [/10.96.0.1], loadBalancer: {scope: x}}\n",
            &["services[0].loadBalancer", "scope"],
        ),
        (
            "policy",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, dryrun: true}\n",
            &["policies[0]", "dryrun"],
        ),
        (
            "match",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, rules: [[[{principal: [{Exact: x}]}]]]}\n",
            &["policies[0].rules[0][0][0]", "principal"],
        ),
        (
            "service account match",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, rules: [[[{serviceAccounts: [{namespace: a, name: b}]}]]]}\n",
            &["serviceAccounts[0]", "`name`"],
        ),
        (
            "string match kind",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, rules: [[[{principals: [{Exakt: x}]}]]]}\n",
            &["principals[0]", "unknown variant `Exakt`", "Exact"],
        ),
    ];
    for (case, yaml, wants) in cases {
        assert_err(case, yaml, wants);
    }
}

fn principals(list: &str) -> Result<Vec<StringMatch>, String> {
    let yaml = format!(
        "policies:\n- {{name: p, namespace: ns, scope: Global, action: Allow, rules: [[[{{principals: {list}}}]]]}}\n"
    );
    parse(&yaml)
        .map(|s| s.policy("ns/p").unwrap().rules[0][0][0].principals.clone())
        .map_err(|e| e.to_string())
}

#[test]
fn string_matches() {
    assert_eq!(
        principals("[{Exact: cluster.local/ns/a/sa/b}, {Prefix: cluster.local/}, {Suffix: /sa/b}]")
            .unwrap(),
        [
            StringMatch::Exact("cluster.local/ns/a/sa/b".into()),
            StringMatch::Prefix("cluster.local/".into()),
            StringMatch::Suffix("/sa/b".into()),
        ]
    );
    for presence in [
        "[{Presence: []}]",
        "[{Presence: {}}]",
        "[{Presence: ~}]",
        "[{Presence: }]",
    ] {
        assert_eq!(
            principals(presence).unwrap(),
            [StringMatch::Presence],
            "{presence}"
        );
    }
    // Block style, as in the seed.
    let block = "policies:\n- name: p\n  namespace: ns\n  scope: Global\n  action: Allow\n  rules:\n  - - - principals:\n        - Presence: []\n        - Exact: \"\"\n";
    let s = ok(block);
    assert_eq!(
        s.policy("ns/p").unwrap().rules[0][0][0].principals,
        [StringMatch::Presence, StringMatch::Exact("".into())]
    );

    for (bad, want) in [
        ("[{Exact: a, Prefix: b}]", "exactly one"),
        ("[{}]", "empty string match"),
        ("[{Presence: [x]}]", "Presence"),
        ("[{Presence: x}]", "Presence"),
        ("[cluster.local/ns/a/sa/b]", "one-key map"),
        ("[{Exact: [a]}]", "a string"),
        ("[!Exact a]", "one-key map"),
    ] {
        let e = principals(bad).expect_err(bad);
        assert!(
            e.contains("principals[0]") && e.contains(want),
            "{bad}: {e}"
        );
    }
}

#[test]
fn serializes_with_ztunnel_names() {
    let s = ok(SEED);
    let w = serde_yaml::to_string(&**s.workload_by_ip(ip("10.244.2.4")).unwrap()).unwrap();
    for key in [
        "uid: Kubernetes//Pod/default/appb-76b56f7cb4-qkjl7",
        "serviceAccount: appb",
        "trustDomain: cluster.local",
        "workloadName: appb",
        "canonicalRevision: v1",
        "clusterId: Kubernetes",
        "protocol: HBONE",
        "networkMode: Standard",
        "status: Healthy",
        "- 10.244.2.4",
        "- default/appb.default.svc.cluster.local",
    ] {
        assert!(w.contains(key), "{key:?} not in\n{w}");
    }
    let svc = serde_yaml::to_string(&**s.service_by_vip(ip("10.96.101.203")).unwrap()).unwrap();
    for key in [
        "- /10.96.101.203",
        "subjectAltNames:",
        "8000: 80",
        "workloadUid: Kubernetes//Pod/default/appb-76b56f7cb4-qkjl7",
    ] {
        assert!(svc.contains(key), "{key:?} not in\n{svc}");
    }
    let p = serde_yaml::to_string(&**s.policy("default/appb-allow-appa").unwrap()).unwrap();
    for key in [
        "scope: Namespace",
        "action: Allow",
        "dryRun: false",
        "principals:",
        "Exact",
    ] {
        assert!(p.contains(key), "{key:?} not in\n{p}");
    }
    assert!(
        !p.contains("notPrincipals"),
        "empty match fields are skipped:\n{p}"
    );
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..2_000 {
        let len = (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = parse_bytes(&bytes);
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }
    // YAML-shaped garbage reaches deeper into the deserializers than random bytes do.
    const TOKENS: &[&str] = &[
        "workloads:",
        "services:",
        "policies:",
        "rules:",
        "- ",
        "- - - ",
        "\n",
        "  ",
        "{",
        "}",
        "[",
        "]",
        ",",
        ": ",
        "uid: a",
        "namespace: ns",
        "workloadIps: [10.0.0.1]",
        "vips: [/10.96.0.1]",
        "services: {ns/a: {80: 80}}",
        "&a ",
        "*a",
        "!!str ",
        "!Exact ",
        "Exact: ",
        "Presence: []",
        "'",
        "\"",
        "|",
        ">",
        "#",
        "~",
        "-1",
        "65536",
        "sourceIps: [10.0.0.0/8]",
        "scope: Global",
        "action: Allow",
        "\t",
        "\0",
        "é",
        "\u{feff}",
    ];
    for _ in 0..5_000 {
        let n = (rng.next() % 40) as usize;
        let doc: String = (0..n)
            .map(|_| TOKENS[(rng.next() % TOKENS.len() as u64) as usize])
            .collect();
        let _ = parse(&doc);
    }
}

#[test]
fn deep_nesting_is_an_error() {
    let deep = [
        "[".repeat(200_000),
        "{".repeat(200_000),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("workloads: {}", "[".repeat(100_000)),
        format!(
            "policies:\n- {{name: p, namespace: ns, scope: Global, action: Allow, rules: {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
        (0..2_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect(),
        "- ".repeat(50_000),
    ];
    for doc in &deep {
        let e = parse(doc).expect_err("deep nesting");
        assert!(e.to_string().len() < 1_000, "{}", e.to_string().len());
    }
}

#[test]
fn flow_depth_is_checked_before_parsing() {
    assert!(check_flow_depth("[".repeat(MAX_FLOW_DEPTH).as_bytes()).is_ok());
    let e =
        check_flow_depth(format!("a: 1\nworkloads: {}", "[".repeat(MAX_FLOW_DEPTH + 1)).as_bytes())
            .unwrap_err();
    assert!(
        e.to_string().contains("deeper than 128 levels at line 2"),
        "{e}"
    );
    // Closed collections do not add up.
    assert!(check_flow_depth("[[]] ".repeat(10_000).as_bytes()).is_ok());

    // Brackets in quoted scalars, comments and inside plain scalars cannot open a collection.
    let b = "[".repeat(500);
    let doc = format!(
        "workloads:\n- uid: u1 # {b}\n  namespace: ns\n  workloadIps: [10.0.0.1]\n  name: \"{b}\\\"{b}\"\n  workloadName: '{b}''{b}'\n  canonicalName: x{b}\n# {b}\n"
    );
    let s = ok(&doc);
    let w = s.workload_by_uid("u1").unwrap();
    assert_eq!(w.name.len(), 1001);
    assert_eq!(w.workload_name.len(), 1001);
    assert_eq!(w.canonical_name.len(), 501);
}

#[test]
fn huge_values_give_short_errors() {
    // One 10 MB number (the slow case in debug builds), then 1 MB values in every position.
    let ten_mb = "9".repeat(10 * 1024 * 1024);
    let e = parse(&format!("workloads: {ten_mb}")).unwrap_err();
    assert!(
        matches!(
            e,
            LocalConfigError::Yaml {
                line: Some(1),
                column: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(
        e.len() < 1_000 && e.ends_with("at line 1 column 12"),
        "{} bytes: {}",
        e.len(),
        &e[..200]
    );

    let nines = "9".repeat(1024 * 1024);
    for doc in [
        format!(
            "workloads:\n- {{uid: u1, namespace: ns, workloadIps: [10.0.0.1], capacity: {nines}}}\n"
        ),
        format!("workloads:\n- {{uid: u1, namespace: ns, workloadIps: ['{nines}']}}\n"),
        format!("workloads:\n- {{uid: u1, namespace: '{nines}', workloadIps: [10.0.0.1]}}\n"),
        format!("workloads:\n- {{uid: '{nines}', namespace: ns}}\n"),
        format!("{nines}: 1\n"),
    ] {
        let e = parse(&doc).expect_err("huge value").to_string();
        assert!(e.len() < 1_000, "error is {} bytes: {}", e.len(), &e[..200]);
        assert!(e.contains("999"), "{e}");
    }
}

#[test]
fn alias_expansion_is_bounded() {
    // One 100 KB string referenced 10,000 times would be a gigabyte once expanded.
    let big = "x".repeat(100 * 1024);
    let refs = vec!["*s"; 10_000].join(", ");
    let doc = format!(
        "workloads:\n- {{uid: &s '{big}', namespace: ns, workloadIps: [10.0.0.1], authorizationPolicies: [{refs}]}}\n"
    );
    let e = parse(&doc).expect_err("string bomb").to_string();
    assert!(
        e.contains("expands") || e.contains("repetition limit"),
        "{e}"
    );

    // Nested lists: 100 ports × 100 matches × 100 clauses per rule, the rule repeated.
    let ports = (1..=100)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let doc = format!(
        "policies:\n- name: p\n  namespace: ns\n  scope: Global\n  action: Allow\n  rules:\n  - &r [&c [&m {{destinationPorts: [{ports}]}}, {m}], {c}]\n  - [{r}]\n",
        m = vec!["*m"; 99].join(", "),
        c = vec!["*c"; 99].join(", "),
        r = vec!["*r"; 1000].join(", "),
    );
    let e = parse(&doc).expect_err("list bomb").to_string();
    assert!(
        e.contains("expands") || e.contains("repetition limit"),
        "{e}"
    );

    // Modest, legitimate alias use still works.
    let s = ok(
        "workloads:\n- {uid: a, namespace: &ns ns, workloadIps: [10.0.0.1]}\n- {uid: b, namespace: *ns, workloadIps: [10.0.0.2]}\n",
    );
    assert_eq!(&*s.workload_by_uid("b").unwrap().namespace, "ns");
}

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    fs::write(&path, SEED).unwrap();
    assert_eq!(load(&path).unwrap().workload_count(), 2);

    let missing = dir.path().join("missing.yaml");
    let e = load(&missing).unwrap_err();
    assert!(matches!(e, LocalConfigError::Read { .. }));
    assert!(e.to_string().contains("missing.yaml"), "{e}");

    let e = load(dir.path()).unwrap_err();
    assert!(
        matches!(e, LocalConfigError::Read { .. }),
        "a directory: {e}"
    );

    fs::write(&path, b"workloads:\n- uid: \xff\xfe\n").unwrap();
    assert!(
        matches!(load(&path).unwrap_err(), LocalConfigError::Yaml { .. }),
        "not UTF-8"
    );

    // A sparse file: the size check refuses it without reading 64 MiB.
    let huge = dir.path().join("huge.yaml");
    fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let e = load(&huge).unwrap_err();
    assert!(
        matches!(e, LocalConfigError::TooLarge { size, .. } if size == MAX_FILE_BYTES + 1),
        "{e}"
    );
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

/// After a change, the first read only notes it (a writer may be half way); the second read
/// of the same content applies it.
fn settle(src: &mut LocalSource) -> Result<Option<Snapshot>, LocalConfigError> {
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "a change is applied only when two reads agree"
    );
    src.reload_if_changed()
}

#[test]
fn local_source_reports_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    write(&path, SEED);
    let mut src = LocalSource::new(&path);
    assert_eq!(src.path(), path);

    let first = src
        .reload_if_changed()
        .unwrap()
        .expect("first read publishes at once");
    assert_eq!(first.workload_count(), 2);
    assert!(src.reload_if_changed().unwrap().is_none(), "unchanged");

    write(
        &path,
        &format!("{SEED}\n# an edit that changes nothing but bytes\n"),
    );
    assert!(settle(&mut src).unwrap().is_some(), "valid edit");
    assert!(src.reload_if_changed().unwrap().is_none());

    write(&path, "workloads: [");
    let e = settle(&mut src).expect_err("broken edit");
    assert!(matches!(e, LocalConfigError::Yaml { .. }), "{e}");
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "same broken content: reported once"
    );
    assert!(src.reload_if_changed().unwrap().is_none());

    write(&path, "workloads:\n- {uid: u1, namespace: ns}\n");
    assert!(
        matches!(settle(&mut src), Err(LocalConfigError::Snapshot(_))),
        "another broken content"
    );
    assert!(src.reload_if_changed().unwrap().is_none());

    write(
        &path,
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1]}\n",
    );
    let fixed = settle(&mut src).unwrap().expect("fix publishes");
    assert_eq!(fixed.workload_count(), 1);

    fs::remove_file(&path).unwrap();
    assert!(
        matches!(settle(&mut src), Err(LocalConfigError::Read { .. })),
        "file gone"
    );
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "same read failure: reported once"
    );
    write(
        &path,
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1]}\n",
    );
    assert!(settle(&mut src).unwrap().is_some(), "back: republished");
}

/// A writer caught half way (the file truncated, then written) never publishes the
/// intermediate content: only what two consecutive reads agree on.
#[test]
fn local_source_never_publishes_a_half_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    write(&path, SEED);
    let mut src = LocalSource::new(&path);
    assert_eq!(
        src.reload_if_changed().unwrap().unwrap().workload_count(),
        2
    );
    // Truncated: seen once, not applied; then the full new content lands before the next read.
    write(&path, "");
    assert!(src.reload_if_changed().unwrap().is_none());
    write(&path, &format!("{SEED}\n# edited\n"));
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "new content seen once"
    );
    let s = src
        .reload_if_changed()
        .unwrap()
        .expect("stable content applies");
    assert_eq!(
        s.workload_count(),
        2,
        "the empty intermediate state was never published"
    );
}

#[test]
fn local_source_sees_configmap_style_symlink_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1.yaml"), dir.path().join("v2.yaml"));
    write(&v1, SEED);
    write(&v2, "{}");
    let link = dir.path().join("local.yaml");
    std::os::unix::fs::symlink(&v1, &link).unwrap();
    let mut src = LocalSource::new(link.clone());
    assert_eq!(
        src.reload_if_changed().unwrap().unwrap().workload_count(),
        2
    );

    // Kubernetes swaps a `..data` symlink atomically; the file's own mtime need not change.
    let tmp = dir.path().join("local.yaml.tmp");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    assert!(settle(&mut src).unwrap().unwrap().is_empty());
    assert!(src.reload_if_changed().unwrap().is_none());
}
