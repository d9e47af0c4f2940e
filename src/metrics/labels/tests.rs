//! Label sets built from connections: ztunnel's fallbacks, the borrowed/owned equivalence the
//! shard's lookup relies on, and the inbound service guess.

use std::collections::BTreeMap;
use std::hash::RandomState;

use super::*;
use crate::xds::local::parse;

const MESH: &str = r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa-1
  namespace: default
  serviceAccount: appa
  workloadName: appa
  canonicalName: appa-app
  canonicalRevision: v1
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
- uid: Kubernetes//Pod/other/bare
  name: bare
  namespace: other
  workloadIps: ["10.244.1.9"]
  node: a
- uid: Kubernetes//Pod/default/appb
  name: appb-1
  namespace: default
  serviceAccount: appb
  workloadName: appb
  canonicalName: appb
  canonicalRevision: v2
  clusterId: east
  locality:
    region: eu
    zone: eu-1
  workloadIps: ["10.244.2.4"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
    "default/named.default.svc.cluster.local":
      9000: 9090
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/10.96.0.10"]
  ports:
    8000: 80
- name: named
  namespace: default
  hostname: named.default.svc.cluster.local
  vips: ["/10.96.0.11"]
  ports:
    9000: 0
"#;

fn as_map(l: &LabelsRef<'_>) -> BTreeMap<&'static str, String> {
    NAMES
        .iter()
        .copied()
        .zip(l.values.iter().map(Value::to_owned_string))
        .collect()
}

#[test]
fn outbound_hbone_labels_follow_ztunnel() {
    let s = parse(MESH).unwrap();
    let appa = s.workload_by_uid("Kubernetes//Pod/default/appa").unwrap();
    let appb = s.workload_by_uid("Kubernetes//Pod/default/appb").unwrap();
    let svc = s
        .service_by_host("default", "appb.default.svc.cluster.local")
        .unwrap();
    let l = LabelsRef::new(&Conn {
        reporter: Reporter::Source,
        source: Some(appa),
        source_principal: Some("spiffe://cluster.local/ns/default/sa/appa"),
        destination: Some(appb),
        destination_principal: None,
        service: Some(svc),
        security: SecurityPolicy::MutualTls,
        response_flags: NO_FLAGS,
    });
    let want: BTreeMap<&str, String> = [
        ("reporter", "source"),
        ("source_workload", "appa"),
        ("source_canonical_service", "appa-app"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/appa",
        ),
        ("source_app", "appa-app"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_service", "appb.default.svc.cluster.local"),
        ("destination_service_namespace", "default"),
        ("destination_service_name", "appb"),
        ("destination_workload", "appb"),
        ("destination_canonical_service", "appb"),
        ("destination_canonical_revision", "v2"),
        ("destination_workload_namespace", "default"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/appb",
        ),
        ("destination_app", "appb"),
        ("destination_version", "v2"),
        ("destination_cluster", "east"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
        ("source_region", "unknown"),
        ("source_zone", "unknown"),
        ("destination_region", "eu"),
        ("destination_zone", "eu-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(as_map(&l), want);
}

#[test]
fn missing_values_are_unknown() {
    let s = parse(MESH).unwrap();
    let bare = s.workload_by_uid("Kubernetes//Pod/other/bare").unwrap();
    // Inbound plaintext from an address nobody knows to a workload with no names set.
    let l = LabelsRef::new(&Conn {
        reporter: Reporter::Destination,
        source: None,
        source_principal: None,
        destination: Some(bare),
        destination_principal: None,
        service: None,
        security: SecurityPolicy::Unknown,
        response_flags: NO_FLAGS,
    });
    let m = as_map(&l);
    for name in [
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_service",
        "destination_service_namespace",
        "destination_service_name",
        "destination_workload",
        "destination_canonical_service",
        "destination_canonical_revision",
        "destination_app",
        "destination_version",
        "connection_security_policy",
        "source_region",
        "source_zone",
        "destination_region",
        "destination_zone",
    ] {
        assert_eq!(m[name], "unknown", "{name}");
    }
    assert_eq!(m["reporter"], "destination");
    assert_eq!(m["destination_workload_namespace"], "other");
    assert_eq!(m["destination_cluster"], "Kubernetes");
    // The default service account makes the identity.
    assert_eq!(
        m["destination_principal"],
        "spiffe://cluster.local/ns/other/sa/default"
    );
    // Nothing known at all.
    let none = LabelsRef::new(&Conn {
        reporter: Reporter::Source,
        source: None,
        source_principal: Some(""),
        destination: None,
        destination_principal: None,
        service: None,
        security: SecurityPolicy::Unknown,
        response_flags: "DENY",
    });
    let m = as_map(&none);
    assert_eq!(m["destination_principal"], "unknown");
    assert_eq!(m["source_principal"], "unknown", "empty is unknown");
    assert_eq!(m["response_flags"], "DENY");
}

#[test]
fn borrowed_and_owned_sets_hash_and_compare_alike() {
    let s = parse(MESH).unwrap();
    let appa = s.workload_by_uid("Kubernetes//Pod/default/appa").unwrap();
    let appb = s.workload_by_uid("Kubernetes//Pod/default/appb").unwrap();
    let state = RandomState::new();
    let conn = Conn {
        reporter: Reporter::Source,
        source: Some(appa),
        source_principal: None,
        destination: Some(appb),
        destination_principal: None,
        service: None,
        security: SecurityPolicy::Unknown,
        response_flags: NO_FLAGS,
    };
    let r = LabelsRef::new(&conn);
    let owned = r.to_owned_set();
    assert_eq!(r.hash_with(&state), owned.hash_with(&state));
    assert!(owned.matches(&r));
    assert_eq!(
        owned.get("destination_principal"),
        Some("spiffe://cluster.local/ns/default/sa/appb")
    );
    // The same identity given as text (as HBONE proves it) is the same label set.
    let proven = LabelsRef::new(&Conn {
        destination_principal: Some("spiffe://cluster.local/ns/default/sa/appb"),
        ..conn
    });
    assert_eq!(proven.hash_with(&state), owned.hash_with(&state));
    assert!(owned.matches(&proven));
    // Any other value is another set.
    let denied = r.with_flags("DENY");
    assert!(!owned.matches(&denied));
    assert_ne!(denied.hash_with(&state), owned.hash_with(&state));
    assert_eq!(denied.to_owned_set().response_flags(), "DENY");
    let other = LabelsRef::new(&Conn {
        destination_principal: Some("spiffe://cluster.local/ns/default/sa/appbx"),
        ..conn
    });
    assert!(!owned.matches(&other));
}

#[test]
fn spiffe_values_compare_piecewise() {
    let v = Value::Spiffe("td", "ns", "sa");
    assert!(v.equals("spiffe://td/ns/ns/sa/sa"));
    assert!(!v.equals("spiffe://td/ns/ns/sa/sa2"));
    assert!(!v.equals("spiffe://td/ns/ns/sa/s"));
    assert!(!v.equals("spiffe://tdx/ns/ns/sa/sa"));
    // The same length, other parts.
    assert!(!v.equals("spiffe://td/ns/nx/sa/sa"));
    assert!(!v.equals("spiffe://tdn/s/ns/sa/sa"));
    assert!(!v.equals("spiffe:/xtd/ns/ns/sa/sa"));
    assert!(!v.equals(""));
    assert!(Value::Str("").equals(""));
    // Values that concatenate alike are still different label sets.
    let state = RandomState::new();
    let mk = |a: &'static str, b: &'static str| {
        let mut values = [Value::Str("x"); LEN];
        values[1] = Value::Str(a);
        values[2] = Value::Str(b);
        LabelsRef { values }.hash_with(&state)
    };
    assert_ne!(mk("ab", "c"), mk("a", "bc"));
}

#[test]
fn inbound_service_is_guessed_from_the_port() {
    let s = parse(MESH).unwrap();
    let appb = s.workload_by_uid("Kubernetes//Pod/default/appb").unwrap();
    let host = |p| guess_inbound_service(&s, appb, p).map(|svc| svc.hostname.to_string());
    assert_eq!(host(80).as_deref(), Some("appb.default.svc.cluster.local"));
    // Named target port: the endpoint's own mapping decides.
    assert_eq!(
        host(9090).as_deref(),
        Some("named.default.svc.cluster.local")
    );
    assert_eq!(host(8000), None, "a service port is not a target port");
    assert_eq!(host(81), None);
    let bare = s.workload_by_uid("Kubernetes//Pod/other/bare").unwrap();
    assert!(guess_inbound_service(&s, bare, 80).is_none());
}
