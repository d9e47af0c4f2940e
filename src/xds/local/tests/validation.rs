//! Every validation error, as one table: each message must name its culprit (the workload,
//! service or policy, the field, the bad value), so an operator can fix the file from the log.

use super::*;

const W: &str = "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1]";
const SVC: &str = "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: [/10.96.0.1]";
const POL: &str = "policies:\n- {name: p, namespace: ns, scope: Namespace, action: Allow";

/// `W`/`SVC`/`POL` with extra flow-map fields appended.
fn with(base: &str, extra: &str) -> String {
    format!("{base}{extra}}}\n")
}

/// What zring once refused for the whole file and istiod legitimately sends is kept, each with
/// what the snapshot makes of it (routing refuses, per connection, what it cannot serve).
#[test]
fn what_istiod_sends_is_kept() {
    // A workload with no IP (ztunnel accepts the empty list; so does zring now).
    let s = ok("workloads:\n- {uid: u1, namespace: ns, workloadIps: []}\n");
    assert!(s.workload_by_uid("u1").unwrap().workload_ips.is_empty());
    assert_eq!(s.workload_count(), 1);

    // Two workloads on one IP: both kept, best first by uid (neither a pod nor HBONE).
    let s = ok(&format!(
        "{W}}}\n- {{uid: u2, namespace: ns, workloadIps: [10.0.0.2, 10.0.0.1]}}\n"
    ));
    let at: Vec<&str> = s
        .workloads_at(ip("10.0.0.1"))
        .iter()
        .map(|w| &*w.uid)
        .collect();
    assert_eq!(at, ["u1", "u2"]);
    assert_eq!(&*s.workload_by_ip(ip("10.0.0.2")).unwrap().uid, "u2");

    // Headless services: no VIP, by omission or an empty list.
    for yaml in [
        "services:\n- {name: a, namespace: ns, hostname: a.ns.svc}\n",
        "services:\n- {name: a, namespace: ns, hostname: a.ns.svc, vips: []}\n",
    ] {
        let s = ok(yaml);
        assert!(
            s.service_by_host("ns", "a.ns.svc").unwrap().is_headless(),
            "{yaml}"
        );
        assert_eq!(s.service_count(), 1, "{yaml}");
    }

    // Two services on one VIP: both kept, the client's namespace first, else by name.
    let s = ok(&format!(
        "{SVC}}}\n- {{name: b, namespace: other, hostname: b.other.svc, vips: [/10.96.0.1]}}\n"
    ));
    let vip = ip("10.96.0.1");
    let names: Vec<&str> = s.services_at_vip(vip).map(|s| &*s.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(&*s.service_for("", vip, Some("other")).unwrap().name, "b");
    assert_eq!(&*s.service_for("", vip, Some("ns")).unwrap().name, "a");
    assert_eq!(&*s.service_by_vip(vip).unwrap().name, "a");
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
            "empty uid",
            "workloads:\n- {name: pod-a, namespace: ns, workloadIps: [10.0.0.1]}\n".into(),
            vec!["workload #0", "pod-a", "uid", "empty"],
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
            "namespace empty",
            "workloads:\n- {uid: u1, namespace: '', workloadIps: [10.0.0.1]}\n".into(),
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
            "empty hostname",
            "services:\n- {name: a, namespace: ns, hostname: '', vips: [/10.96.0.1]}\n".into(),
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
