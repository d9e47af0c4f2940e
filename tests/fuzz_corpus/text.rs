//! The text seeds: CONNECT authorities, HBONE header values, SPIFFE identities and local YAML
//! configs, well-formed and hostile.

use super::Seeds;

fn text(items: &[(&str, &str)]) -> Seeds {
    items
        .iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect()
}

pub fn authority() -> Seeds {
    text(&[
        ("v4", "10.244.2.4:80"),
        ("v6", "[fd00::4]:8080"),
        ("v4-mapped", "[::ffff:10.244.2.4]:15008"),
        ("port-zero", "10.244.2.4:0"),
        ("port-too-big", "10.244.2.4:65536"),
        ("no-port", "10.244.2.4"),
        ("hostname", "appb.default.svc.cluster.local:80"),
        ("scoped", "[fe80::1%eth0]:80"),
        ("absolute-uri", "http://10.244.2.4:80/path?q"),
        ("userinfo", "user@10.244.2.4:80"),
        ("path", "/just/a/path"),
        ("nul", "10.244.2.4:80\0"),
        ("empty", ""),
    ])
}

pub fn headers() -> Seeds {
    text(&[
        (
            "baggage",
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=appa,service.name=appa,service.version=v1",
        ),
        (
            "baggage-props",
            "k8s.job.name=x;prop=1, other=y ,,k8s.pod.name=",
        ),
        ("baggage-quoted", "k=\"quoted\""),
        ("baggage-novalue", "novalue"),
        ("forwarded", "for=\"10.244.1.8:41234\""),
        (
            "forwarded-v6",
            "for=\"[fd00::8]:1\";proto=http, for=1.2.3.4",
        ),
        ("forwarded-bare", "For=[fd00::9]"),
        ("forwarded-hidden", "for=\"_hidden\""),
        (
            "traceparent",
            "00-0000000000000000000000000000dead-0000000000001234-01",
        ),
        (
            "traceparent-upper",
            "00-0000000000000000000000000000DEAD-0000000000001234-00",
        ),
        (
            "traceparent-zero",
            "00-00000000000000000000000000000000-0000000000001234-00",
        ),
    ])
}

pub fn identities() -> Seeds {
    text(&[
        ("valid", "spiffe://cluster.local/ns/default/sa/appa"),
        ("dots", "spiffe://my_td-1.example/ns/0ns/sa/build.robot-1"),
        ("extra-segment", "spiffe://cluster.local/ns/a/sa/b/c"),
        ("nul", "spiffe://cluster.local/ns/a/sa/b\0"),
        ("upper-scheme", "SPIFFE://cluster.local/ns/a/sa/b"),
        ("port", "spiffe://cluster.local:443/ns/a/sa/b"),
        ("percent", "spiffe://cluster.local/ns/%61/sa/b"),
        ("dotdot", "spiffe://cluster.local/ns/../sa/b"),
        ("unicode", "spiffe://clüster.local/ns/a/sa/b"),
    ])
}

pub fn yaml() -> Seeds {
    let mesh = r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  workloadIps: ["10.244.2.4", "fd00::4"]
  protocol: TCP
  node: b
  services: {}
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/10.96.101.203"]
  ports:
    8000: 80
policies:
- name: allow-appa
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/appa
        - !Presence []
        notDestinationPorts: [22]
"#;
    // Aliases in a valid place: each `*w` re-reads the anchored workload.
    let mut bomb = String::from(
        "workloads:\n- &w {uid: u, name: n, namespace: d, authorizationPolicies: [a, b, c, d]}\n",
    );
    bomb.push_str(&"- *w\n".repeat(64));
    text(&[
        ("mesh.yaml", mesh),
        ("empty.yaml", ""),
        ("null.yaml", "~\n"),
        ("broken.yaml", "workloads: [ {{{ not yaml"),
        ("unknown-field.yaml", "workloads:\n- uid: x\n  nmae: typo\n"),
        (
            "duplicate-ip.yaml",
            "workloads:\n- {uid: a, name: a, namespace: d, workloadIps: [10.0.0.1]}\n- {uid: b, name: b, namespace: d, workloadIps: [10.0.0.1]}\n",
        ),
        ("deep-flow.yaml", &format!("workloads: {}", "[".repeat(200))),
        ("alias-bomb.yaml", &bomb),
        ("tabs.yaml", "workloads:\n\t- uid: x\n"),
    ])
}
