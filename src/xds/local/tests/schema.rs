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
