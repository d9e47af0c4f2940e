//! Whole documents: the two-node seed cluster the lab runs, ztunnel's own `localhost.yaml`,
//! empty documents, and the defaults of every optional field.

use super::*;

#[test]
fn seed_cluster() {
    let s = strict(SEED);
    assert_eq!(
        (s.workload_count(), s.service_count(), s.policy_count()),
        (2, 1, 1)
    );

    let appa = s.workload_by_ip(ip("10.244.1.8")).expect("appa by IP");
    assert_eq!(&*appa.name, "appa-bf7c45dcb-lmtg2");
    assert_eq!(&*appa.node, "ambient-worker");
    assert_eq!(
        crate::identity::Identity::of_workload(appa)
            .unwrap()
            .as_str(),
        "spiffe://cluster.local/ns/default/sa/appa"
    );
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

/// ztunnel's own `examples/localhost.yaml`: a non-default VIP network, a policy with
/// `notDestinationPorts`, both workloads in both services.
#[test]
fn ztunnel_localhost_example() {
    let s = strict(include_str!(
        "../../../../tests/data/ztunnel-examples/localhost.yaml"
    ));
    assert_eq!(
        (s.workload_count(), s.service_count(), s.policy_count()),
        (2, 2, 1)
    );
    let local = s.service_by_vip(ip("127.10.0.1")).unwrap();
    let names: Vec<&str> = local.endpoints.iter().map(|e| &*e.workload.name).collect();
    assert_eq!(
        names,
        ["local", "local-tcp"],
        "endpoints keep workload order"
    );
    assert!(local.canonical);
    assert_eq!(
        &*local.subject_alt_names[0],
        "spiffe://cluster.local/ns/default/sa/local"
    );
    let remote = s.service_by_vip(ip("127.10.0.2")).unwrap();
    assert_eq!(&*remote.vips[0].network, "remote");
    assert_eq!(remote.endpoints.len(), 2);
    assert_eq!(remote.endpoints[0].target_port(remote, 80), 8080);
    let tcp = s.workload_by_ip(ip("127.0.0.2")).unwrap();
    assert_eq!(tcp.protocol, Protocol::Tcp);
    assert_eq!(&*tcp.uid, "cluster1//v1/Pod/default/local-tcp");
    let p = s.policy("default/deny-9999").unwrap();
    assert_eq!((p.action, p.dry_run), (PolicyAction::Allow, false));
    assert_eq!(p.rules[0][0][0].not_destination_ports, [9999]);
}

#[test]
fn empty_documents_are_empty_snapshots() {
    for doc in [
        "",
        "\n",
        "# only a comment\n",
        "{}",
        "workloads: []",
        "---\n",
    ] {
        let s = strict(doc);
        assert!(s.is_empty(), "{doc:?}");
        assert!(s.workload_by_ip(ip("10.0.0.1")).is_none());
    }
    // As in ztunnel, a document that is explicitly null is not a config.
    for doc in ["~", "null"] {
        assert!(strict_err(doc).contains("expected struct"), "{doc:?}");
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
    assert_eq!(
        crate::identity::Identity::of_workload(w).unwrap().as_str(),
        "spiffe://cluster.local/ns/ns/sa/default"
    );

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

/// The admin's `staticConfig` shows the file as ztunnel's dump does: tags as one-key maps.
#[test]
fn to_json_shows_tags_as_ztunnel_does() {
    let j = to_json(SEED).unwrap();
    assert_eq!(
        j["policies"][0]["rules"][0][0][0]["principals"][0],
        serde_json::json!({"Exact": "cluster.local/ns/default/sa/appa"})
    );
    assert_eq!(j["services"][0]["ports"]["8000"], 80);
    let p = to_json("policies:\n- rules: [[[{notPrincipals: [!Presence []]}]]]\n").unwrap();
    assert_eq!(
        p["policies"][0]["rules"][0][0][0]["notPrincipals"][0],
        serde_json::json!({"Presence": []})
    );
    assert!(to_json("{").is_none());
}
