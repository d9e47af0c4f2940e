//! The document's shape: unknown fields are errors that name the field and its place, string
//! matches in each of their forms, and serialization with ztunnel's field names.

use super::*;

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
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {}, serviceAcount: x}\n",
            &["workloads[0]", "serviceAcount"],
        ),
        (
            "old workloadIp",
            "workloads:\n- {uid: u1, namespace: ns, workloadIp: 10.0.0.1, services: {}}\n",
            &["workloads[0]", "workloadIp"],
        ),
        (
            "gateway",
            "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {}, waypoint: {destination: /10.0.0.9, port: 1}}\n",
            &["workloads[0].waypoint", "port"],
        ),
        (
            "service",
            "services:\n- {name: a, namespace: ns, hostname: a, vips: [/10.96.0.1], ports: {}, vip: x}\n",
            &["services[0]", "`vip`"],
        ),
        (
            "endpoint",
            "services:\n- {name: a, namespace: ns, hostname: a, vips: [/10.96.0.1], ports: {}, endpoints: {u: {workloadUid: u, port: {}, status: Healthy, weight: 1}}}\n",
            &["services[0].endpoints", "weight"],
        ),
        (
            "load balancer",
            "services:\n- {name: a, namespace: ns, hostname: a, vips: [/10.96.0.1], ports: {}, loadBalancer: {scope: x}}\n",
            &["services[0].loadBalancer", "scope"],
        ),
        (
            "policy",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, rules: [], dryRun: false, dryrun: true}\n",
            &["policies[0]", "dryrun"],
        ),
        // ztunnel ignores unknown fields in a match group; zring refuses them (module doc).
        (
            "match",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, dryRun: false, rules: [[[{principal: [!Exact x]}]]]}\n",
            &["policies[0].rules[0][0][0]", "principal"],
        ),
        (
            "service account match",
            "policies:\n- {name: p, namespace: ns, scope: Global, action: Deny, dryRun: false, rules: [[[{serviceAccounts: [{namespace: a, serviceAccount: b, name: c}]}]]]}\n",
            &["serviceAccounts[0]", "`name`"],
        ),
    ];
    for (case, yaml, wants) in cases {
        let msg = strict_err(yaml);
        for want in *wants {
            assert!(msg.contains(want), "{case}: message {msg:?} lacks {want:?}");
        }
    }
}

/// What ztunnel refuses, zring refuses, naming the field and the line. Each case was checked
/// against the real ztunnel (62d826530e5c) with the same document.
#[test]
fn ztunnels_rejections() {
    const W: &str =
        "workloads:\n- uid: u1\n  namespace: ns\n  workloadIps: [10.0.0.1]\n  services: {}\n";
    const S: &str = "services:\n- name: s\n  namespace: ns\n  hostname: s.ns.svc\n  vips: [/10.96.0.1]\n  ports: {80: 8080}\n";
    const P: &str = "policies:\n- name: p\n  namespace: ns\n  scope: Namespace\n  action: Allow\n  dryRun: false\n  rules: [[[{MATCH}]]]\n";
    let m = |g: &str| P.replace("MATCH", g);
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "workload without services",
            W.replace("  services: {}\n", ""),
            &["workloads[0]", "missing field `services`", "line 2"],
        ),
        (
            "workload without namespace",
            W.replace("  namespace: ns\n", ""),
            &["workloads[0]", "missing field `namespace`"],
        ),
        (
            "workload without workloadIps",
            W.replace("  workloadIps: [10.0.0.1]\n", ""),
            &["workloads[0]", "missing field `workloadIps`"],
        ),
        (
            "integer name",
            format!("{W}  name: 123\n"),
            &["workloads[0].name", "integer `123`", "a string"],
        ),
        (
            "integer canonicalRevision",
            format!("{W}  canonicalRevision: 1\n"),
            &["canonicalRevision", "integer `1`"],
        ),
        (
            "null network",
            format!("{W}  network:\n"),
            &["workloads[0].network", "expected a string"],
        ),
        (
            "null trustDomain",
            format!("{W}  trustDomain: ~\n"),
            &["trustDomain", "expected a string"],
        ),
        (
            "integer locality",
            format!("{W}  locality: {{region: 1, zone: z, subzone: s}}\n"),
            &["locality.region", "integer"],
        ),
        (
            "partial locality",
            format!("{W}  locality: {{region: r, zone: z}}\n"),
            &["locality", "missing field `subzone`"],
        ),
        (
            "quoted bool",
            format!("{W}  nativeTunnel: \"true\"\n"),
            &["nativeTunnel", "expected a boolean"],
        ),
        (
            "lowercase protocol",
            format!("{W}  protocol: hbone\n"),
            &["protocol", "unknown variant `hbone`", "HBONE"],
        ),
        (
            "lowercase status",
            format!("{W}  status: healthy\n"),
            &["status", "unknown variant `healthy`"],
        ),
        (
            "waypoint without port",
            format!("{W}  waypoint: {{destination: /10.0.0.9}}\n"),
            &["waypoint", "missing field `hboneMtlsPort`"],
        ),
        (
            "bad waypoint",
            format!("{W}  waypoint: {{destination: nothing, hboneMtlsPort: 15008}}\n"),
            &["waypoint", "nothing"],
        ),
        (
            "bad IP",
            W.replace("10.0.0.1", "10.0.0.256"),
            &["workloadIps", "10.0.0.256"],
        ),
        (
            "services key",
            W.replace("services: {}", "services: {noslash: {80: 80}}"),
            &["services", "noslash"],
        ),
        (
            "service without name",
            S.replace("- name: s\n  namespace", "- namespace"),
            &["services[0]", "missing field `name`"],
        ),
        (
            "service without vips",
            S.replace("  vips: [/10.96.0.1]\n", ""),
            &["services[0]", "missing field `vips`"],
        ),
        (
            "service without ports",
            S.replace("  ports: {80: 8080}\n", ""),
            &["services[0]", "missing field `ports`"],
        ),
        (
            "VIP without network",
            S.replace("/10.96.0.1", "10.96.0.1"),
            &["vips", "10.96.0.1", "network/IP"],
        ),
        (
            "VIP as a map",
            S.replace("[/10.96.0.1]", "[{network: '', address: 10.96.0.1}]"),
            &["services[0].vips[0]", "a string"],
        ),
        (
            "partial loadBalancer",
            format!("{S}  loadBalancer: {{mode: Strict}}\n"),
            &["loadBalancer", "missing field `routingPreferences`"],
        ),
        (
            "policy without dryRun",
            P.replace("  dryRun: false\n", "").replace("MATCH", ""),
            &["policies[0]", "missing field `dryRun`"],
        ),
        (
            "policy without name",
            P.replace("- name: p\n  namespace", "- namespace")
                .replace("MATCH", ""),
            &["policies[0]", "missing field `name`"],
        ),
        (
            "policy without rules",
            P.replace("  rules: [[[{MATCH}]]]\n", ""),
            &["policies[0]", "missing field `rules`"],
        ),
        (
            "lowercase scope",
            P.replace("scope: Namespace", "scope: namespace")
                .replace("MATCH", ""),
            &["scope", "unknown variant `namespace`"],
        ),
        (
            "map string match",
            m("principals: [{Exact: a}]"),
            &["principals[0]", "YAML tag", "!Exact value", "line 7"],
        ),
        (
            "untagged string match",
            m("principals: [a]"),
            &["principals[0]", "no kind", "!Exact"],
        ),
        (
            "unknown tag",
            m("principals: [!Regex a]"),
            &["principals", "unknown variant `Regex`", "Exact"],
        ),
        (
            "lowercase tag",
            m("principals: [!exact a]"),
            &["unknown variant `exact`"],
        ),
        (
            "sequence in a tag",
            m("principals: [!Exact [a]]"),
            &["principals[0]", "a string"],
        ),
        (
            "null presence",
            m("principals: [!Presence ~]"),
            &["principals[0]", "!Presence"],
        ),
        (
            "map presence",
            m("principals: [!Presence {}]"),
            &["principals[0]", "!Presence"],
        ),
        (
            "presence with a value",
            m("principals: [!Presence [a]]"),
            &["principals[0]", "invalid length 1"],
        ),
        (
            "half a service account",
            m("serviceAccounts: [{namespace: a}]"),
            &["serviceAccounts[0]", "missing field `serviceAccount`"],
        ),
        (
            "bare source IP",
            m("sourceIps: [10.0.0.1]"),
            &["sourceIps", "10.0.0.1", "prefix length"],
        ),
        (
            "quoted port",
            m("destinationPorts: ['80']"),
            &["destinationPorts[0]", "u16"],
        ),
        (
            "null workloads",
            "workloads: ~\n".into(),
            &["workloads", "expected a list"],
        ),
    ];
    for (case, yaml, wants) in cases {
        let msg = strict_err(&yaml);
        for want in wants {
            assert!(
                msg.contains(want),
                "{case}: message {msg:?} lacks {want:?}\n{yaml}"
            );
        }
    }
}

/// What ztunnel accepts beyond the basics, zring accepts with the same meaning (each case
/// checked against the real ztunnel too).
#[test]
fn ztunnels_acceptances() {
    const W: &str =
        "workloads:\n- uid: u1\n  namespace: ns\n  workloadIps: [10.0.0.1]\n  services: {}\n";
    let s = strict(&format!(
        "{W}  locality: {{region: r, zone: z, subzone: s, city: x}}\n  applicationTunnel: {{protocol: PROXY}}\n  waypoint: {{destination: net1/10.0.0.9, hboneMtlsPort: 15008}}\n"
    ));
    let w = s.workload_by_uid("u1").unwrap();
    assert_eq!(
        &*w.locality.subzone, "s",
        "unknown locality fields are ignored"
    );
    assert_eq!(w.application_tunnel.as_ref().unwrap().port, None);
    assert!(
        matches!(&w.waypoint.as_ref().unwrap().destination, Destination::Address(a) if &*a.network == "net1")
    );

    // A service's own endpoints (ztunnel's config dump writes them) join the workload they
    // name; the workload's own `services` entry wins; an unknown UID routes nowhere.
    let s = strict(
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {}}\n- {uid: u2, namespace: ns, workloadIps: [10.0.0.2], services: {ns/s.ns.svc: {80: 7000}}}\nservices:\n- name: s\n  namespace: ns\n  hostname: s.ns.svc\n  vips: [remote/10.96.0.1]\n  ports: {80: 8080}\n  visibility: Public\n  cidrVips: []\n  endpoints:\n    u1: {workloadUid: u1, port: {80: 9090}, status: Healthy}\n    u2: {workloadUid: u2, port: {80: 9999}, status: Healthy}\n    gone: {workloadUid: gone, port: {}, status: Healthy}\n",
    );
    let svc = s.service_by_host("ns", "s.ns.svc").unwrap();
    assert_eq!(&*svc.vips[0].network, "remote");
    let mut eps: Vec<_> = s
        .service_endpoints(svc)
        .map(|(w, ports)| (w.uid.to_string(), ports.get(&80).copied()))
        .collect();
    eps.sort();
    assert_eq!(eps, [("u1".into(), Some(9090)), ("u2".into(), Some(7000))]);

    // CIDR VIPs are kept: host bits cleared, looked up by range.
    let s = strict(
        "services:\n- name: s\n  namespace: ns\n  hostname: s.ns.svc\n  vips: []\n  ports: {}\n  cidrVips: [{network: '', cidr: 10.97.1.2/16}, {network: net2, cidr: 'fd00::/64'}]\n",
    );
    let svc = s.service_by_host("ns", "s.ns.svc").unwrap();
    let cidrs: Vec<String> = svc
        .cidr_vips
        .iter()
        .map(|c| format!("{}/{}", c.network, c.cidr))
        .collect();
    assert_eq!(cidrs, ["/10.97.0.0/16", "net2/fd00::/64"]);
    assert!(s.service_for("", ip("10.97.200.1"), None).is_some());
    assert!(s.service_for("net2", ip("10.97.200.1"), None).is_none());
    assert!(s.service_for("net2", ip("fd00::9"), None).is_some());
    assert!(s.service_for("", ip("10.98.0.1"), None).is_none());
    for (bad, why) in [
        ("10.97.0.0/33", "longer than 32"),
        ("nonsense", "not a network"),
    ] {
        let e = strict_err(&format!(
            "services:\n- name: s\n  namespace: ns\n  hostname: s.ns.svc\n  vips: []\n  ports: {{}}\n  cidrVips: [{{network: '', cidr: '{bad}'}}]\n"
        ));
        assert!(e.contains("cidrVips") && e.contains(why), "{bad}: {e}");
    }

    // What zring cannot honour yet is refused by name rather than ignored.
    for (field, extra) in [
        ("visibility", "  visibility: Namespace\n"),
        (
            "weightedWaypoints",
            "  weightedWaypoints: [{destination: {destination: /10.0.0.9, hboneMtlsPort: 15008}, weight: 1}]\n",
        ),
    ] {
        let e = strict_err(&format!(
            "services:\n- name: s\n  namespace: ns\n  hostname: s.ns.svc\n  vips: [/10.96.0.1]\n  ports: {{}}\n{extra}"
        ));
        assert!(
            e.contains(field) && e.contains("not supported"),
            "{field}: {e}"
        );
    }
}

fn principals(list: &str) -> Result<Vec<StringMatch>, String> {
    let yaml = format!(
        "policies:\n- {{name: p, namespace: ns, scope: Global, action: Allow, dryRun: false, rules: [[[{{principals: {list}}}]]]}}\n"
    );
    parse_bytes(yaml.as_bytes())
        .map(|s| s.policy("ns/p").unwrap().rules[0][0][0].principals.clone())
        .map_err(|e| e.to_string())
}

#[test]
fn string_matches_are_tags() {
    assert_eq!(
        principals(
            "[!Exact cluster.local/ns/a/sa/b, !Prefix cluster.local/, !Suffix /sa/b, !Exact 123]"
        )
        .unwrap(),
        [
            StringMatch::Exact("cluster.local/ns/a/sa/b".into()),
            StringMatch::Prefix("cluster.local/".into()),
            StringMatch::Suffix("/sa/b".into()),
            StringMatch::Exact("123".into()),
        ]
    );
    for presence in ["[!Presence []]", "[!Presence ]"] {
        assert_eq!(
            principals(presence).unwrap(),
            [StringMatch::Presence],
            "{presence}"
        );
    }
    // Block style, as in the seed and ztunnel's own files.
    let block = "policies:\n- name: p\n  namespace: ns\n  scope: Global\n  action: Allow\n  dryRun: false\n  rules:\n  - - - principals:\n        - !Presence []\n        - !Exact \"\"\n";
    let s = strict(block);
    assert_eq!(
        s.policy("ns/p").unwrap().rules[0][0][0].principals,
        [StringMatch::Presence, StringMatch::Exact("".into())]
    );
}

/// Fixtures in code (`parse`) may still use the older shorthand; files may not.
#[test]
fn shorthand_is_for_code_only() {
    let short = "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], waypoint: {destination: /10.0.0.9}}\npolicies:\n- {name: p, namespace: ns, scope: Global, action: Allow, rules: [[[{principals: [{Exact: a}, {Prefix: b}, {Suffix: c}, {Presence: []}, {Presence: ~}], notNamespaces: [{Exact: d}]}]]]}\n";
    let s = ok(short);
    let m = &s.policy("ns/p").unwrap().rules[0][0][0];
    assert_eq!(
        m.principals,
        [
            StringMatch::Exact("a".into()),
            StringMatch::Prefix("b".into()),
            StringMatch::Suffix("c".into()),
            StringMatch::Presence,
            StringMatch::Presence,
        ]
    );
    assert_eq!(m.not_namespaces, [StringMatch::Exact("d".into())]);
    let w = s.workload_by_uid("u1").unwrap();
    assert_eq!(w.waypoint.as_ref().unwrap().hbone_mtls_port, 15008);
    let e = strict_err(short);
    assert!(e.contains("missing field `hboneMtlsPort`"), "{e}");
    // Shorthand never hides a real error.
    let e = err("workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.300]}\n");
    assert!(e.contains("10.0.0.300"), "{e}");
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
