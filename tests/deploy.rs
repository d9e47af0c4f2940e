//! The Kubernetes manifests in `deploy/` against the code they deploy and the chart they copy:
//! `zring.yaml` has the shape of Istio's ztunnel chart (names, labels, arguments, environment,
//! ports, probe, mounts, capabilities), `zring-node.yaml` is the node-mode variant with the same
//! identity; every variable they set is one zring reads and accepts, the capture parameters make
//! a valid ruleset, and the node-mode containers get no capability beyond NET_ADMIN.
//! (Schema validation against the Kubernetes API is `.ci/run`'s `kubernetes-validate`.)

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

/// The chart-shaped (in-pod) DaemonSet, the node-mode one, and node mode's uninstaller.
const IN_POD: &str = "deploy/zring.yaml";
const NODE: &str = "deploy/zring-node.yaml";
const UNINSTALL: &str = "deploy/zring-uninstall.yaml";
/// Read by `zring redirect`, not by `zring run`.
const REDIRECT_VARS: [&str; 2] = ["ZRING_POD_CIDRS", "ZRING_POD_INTERFACES"];

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| &v[key])
}

fn str_of<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn containers(pod_spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod_spec[*k].as_sequence())
        .flatten()
        .collect()
}

fn config_map(docs: &[Value]) -> BTreeMap<String, String> {
    let cm = kind(docs, "ConfigMap");
    assert_eq!(cm.len(), 1, "one ConfigMap");
    serde_yaml::from_value(cm[0]["data"].clone()).unwrap()
}

/// The proxy container (`istio-proxy`, as the chart names it) of a manifest's DaemonSet.
fn proxy_container(docs: &[Value]) -> &Value {
    let ds = kind(docs, "DaemonSet")[0];
    containers(get(ds, "spec.template.spec"))
        .into_iter()
        .find(|c| c["name"] == "istio-proxy")
        .expect("an istio-proxy container")
}

/// A container's environment as `zring run` would see it in a pod: literal values, and the
/// downward API's answers for `fieldRef` / `resourceFieldRef`.
fn pod_env(c: &Value, config_map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut env = config_map.cloned().unwrap_or_default();
    for e in c["env"].as_sequence().into_iter().flatten() {
        let value = match (e["value"].as_str(), &e["valueFrom"]) {
            (Some(v), _) => v.to_owned(),
            (None, from) => match (
                from["fieldRef"]["fieldPath"].as_str(),
                from["resourceFieldRef"]["resource"].as_str(),
            ) {
                (Some("metadata.name"), _) => "ztunnel-x7k2p".into(),
                (Some("metadata.namespace"), _) => "istio-system".into(),
                (Some("spec.nodeName"), _) => "node-1".into(),
                (Some("status.podIP"), _) => "10.244.1.7".into(),
                (Some("spec.serviceAccountName"), _) => "ztunnel".into(),
                (_, Some(_)) => "4".into(),
                other => panic!("{}: unexpected valueFrom {other:?}", str_of(e, "name")),
            },
        };
        env.insert(str_of(e, "name").to_owned(), value);
    }
    env.insert("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into());
    env
}

fn known(name: &str) -> bool {
    zring::config::VARS.iter().any(|v| v.name == name)
        || zring::config::NOT_IMPLEMENTED
            .iter()
            .any(|u| u.name == name)
        || REDIRECT_VARS.contains(&name)
        || name.starts_with(zring::config::ISTIO_META_PREFIX)
}

#[test]
fn every_variable_is_one_zring_reads_and_accepts() {
    for path in [IN_POD, NODE] {
        let docs = documents(path);
        let data = (path == NODE).then(|| config_map(&docs));
        for name in data.iter().flat_map(BTreeMap::keys) {
            assert!(
                known(name),
                "{path}: ConfigMap sets {name}, which zring does not read"
            );
        }
        let ds = kind(&docs, "DaemonSet")[0];
        for c in containers(get(ds, "spec.template.spec")) {
            for e in c["env"].as_sequence().into_iter().flatten() {
                let name = str_of(e, "name");
                assert!(
                    known(name),
                    "{path}: {} sets {name}, which zring does not read",
                    str_of(c, "name")
                );
            }
        }
        // The values parse, as `zring run` would read them in the pod.
        let env = pod_env(proxy_container(&docs), data.as_ref());
        let config = zring::config::Config::from_lookup(|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        for t in [&config.xds, &config.ca] {
            let t = t.as_ref().expect("istiod");
            assert_eq!(t.address(), "https://istiod.istio-system.svc:15012");
            assert!(t.is_tls());
        }
        assert_eq!(config.service_account, "ztunnel");
        if let Some(data) = &data {
            zring::lab::Capture::parse(&data["ZRING_POD_CIDRS"], &data["ZRING_POD_INTERFACES"])
                .expect("the capture parameters are valid");
        }
    }
}

#[test]
fn probes_and_annotations_name_zrings_ports() {
    for path in [IN_POD, NODE] {
        let docs = documents(path);
        let ds = kind(&docs, "DaemonSet")[0];
        let pod = get(ds, "spec.template");
        let host_network = get(pod, "spec.hostNetwork").as_bool().unwrap_or(false);
        assert_eq!(host_network, path == NODE, "{path}");
        let annotations = get(pod, "metadata.annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "15020");
        let proxy = proxy_container(&docs);
        let probe = get(proxy, "readinessProbe.httpGet");
        assert_eq!(probe["port"], 15021);
        assert_eq!(probe["path"], "/healthz/ready");
        // Liveness through the admin socket, out of reach of a network flood.
        let live = get(proxy, "livenessProbe.exec.command");
        assert_eq!(
            live,
            &serde_yaml::from_str::<Value>(
                r#"["/usr/local/bin/zring", admin, GET, /healthz/live]"#
            )
            .unwrap(),
            "{path}"
        );
        // As the chart starts ztunnel.
        assert_eq!(
            proxy["args"],
            serde_yaml::from_str::<Value>("[proxy, ztunnel]").unwrap()
        );
    }
    assert!(zring::config::OWN_PORTS.contains(&15021) && zring::config::OWN_PORTS.contains(&15020));
}

/// What istiod, istioctl and Istio's Grafana dashboard look for, in both variants: the
/// ServiceAccount istiod trusts, DaemonSet istio-system/ztunnel whose selector finds pods
/// labelled app=ztunnel (named ztunnel-*), container istio-proxy.
#[test]
fn both_variants_are_ztunnel_to_istio() {
    for path in [IN_POD, NODE] {
        let docs = documents(path);
        let sa = kind(&docs, "ServiceAccount");
        assert_eq!(sa.len(), 1, "{path}");
        assert_eq!(str_of(sa[0], "metadata.name"), "ztunnel", "{path}");
        assert_eq!(
            str_of(sa[0], "metadata.namespace"),
            "istio-system",
            "{path}"
        );
        let ds = kind(&docs, "DaemonSet")[0];
        assert_eq!(str_of(ds, "metadata.name"), "ztunnel", "{path}");
        assert_eq!(str_of(ds, "metadata.namespace"), "istio-system", "{path}");
        assert_eq!(
            get(ds, "spec.selector.matchLabels.app"),
            "ztunnel",
            "{path}"
        );
        let pod = get(ds, "spec.template");
        let labels = get(pod, "metadata.labels");
        for (k, v) in [
            ("app", "ztunnel"),
            ("app.kubernetes.io/name", "ztunnel"),
            ("sidecar.istio.io/inject", "false"),
            ("istio.io/dataplane-mode", "none"),
        ] {
            assert_eq!(labels[k], v, "{path}: label {k}");
        }
        assert_eq!(get(pod, "spec.serviceAccountName"), "ztunnel", "{path}");
        assert_eq!(get(pod, "spec.priorityClassName"), "system-node-critical");
        let proxy = proxy_container(&docs);
        let mounts: Vec<&str> = proxy["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| str_of(m, "mountPath"))
            .collect();
        for m in ["/var/run/secrets/istio", "/var/run/secrets/tokens", "/tmp"] {
            assert!(mounts.contains(&m), "{path}: {m} not mounted");
        }
        let volumes = get(pod, "spec.volumes").as_sequence().unwrap();
        let token = volumes.iter().find(|v| v["name"] == "istio-token").unwrap();
        let sat = &token["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(
            (&sat["audience"], &sat["path"]),
            (&"istio-ca".into(), &"istio-token".into())
        );
        let roots = volumes
            .iter()
            .find(|v| v["name"] == "istiod-ca-cert")
            .unwrap();
        assert_eq!(roots["configMap"]["name"], "istio-ca-root-cert");
    }
}

/// `zring.yaml` is the chart's rendering: the chart's environment (default values, ambient
/// profile) name for name, its ports, its CNI socket mount and its security context.
#[test]
fn in_pod_variant_is_the_charts_shape() {
    let docs = documents(IN_POD);
    let proxy = proxy_container(&docs);
    let names: Vec<&str> = proxy["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| str_of(e, "name"))
        .collect();
    let chart: Vec<&str> = CHART_ENV.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, chart);
    assert!(!names.contains(&"PROXY_MODE"), "in-pod is the default mode");
    assert_eq!(
        proxy["ports"],
        serde_yaml::from_str::<Value>(
            "[{containerPort: 15020, name: ztunnel-stats, protocol: TCP}]"
        )
        .unwrap()
    );
    let sock = proxy["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/ztunnel")
        .expect("the CNI socket directory");
    let ds = kind(&docs, "DaemonSet")[0];
    let volume = get(ds, "spec.template.spec.volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == sock["name"])
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], "/var/run/ztunnel");
    let caps = get(proxy, "securityContext.capabilities");
    assert_eq!(
        caps["add"],
        serde_yaml::from_str::<Value>("[NET_ADMIN, SYS_ADMIN, NET_RAW]").unwrap()
    );
    assert_eq!(caps["drop"][0], "ALL");
}

/// The node variant sets PROXY_MODE=node on top of the chart's environment.
#[test]
fn node_variant_sets_node_mode() {
    let docs = documents(NODE);
    let env = pod_env(proxy_container(&docs), Some(&config_map(&docs)));
    assert_eq!(env["PROXY_MODE"], "node");
    for (k, _) in CHART_ENV {
        // In-pod only: the CNI handshake switch and the CPU request the chart derives.
        if !["INPOD_ENABLED", "ZTUNNEL_RESOURCE_CPU_REQUEST"].contains(&k) {
            assert!(env.contains_key(k), "{NODE}: {k} missing");
        }
    }
}

/// The environment Istio's ztunnel chart gives its container (templates/daemonset.yaml with
/// default values and the ambient profile), in its order; the downward API's values filled in.
const CHART_ENV: [(&str, &str); 15] = [
    ("CA_ADDRESS", "istiod.istio-system.svc:15012"),
    ("XDS_ADDRESS", "istiod.istio-system.svc:15012"),
    ("RUST_LOG", "info"),
    ("RUST_BACKTRACE", "1"),
    ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
    ("INPOD_ENABLED", "true"),
    ("TERMINATION_GRACE_PERIOD_SECONDS", "30"),
    ("POD_NAME", "ztunnel-x7k2p"),
    ("POD_NAMESPACE", "istio-system"),
    ("NODE_NAME", "node-1"),
    ("INSTANCE_IP", "10.244.1.7"),
    ("SERVICE_ACCOUNT", "ztunnel"),
    ("ISTIO_META_ENABLE_HBONE", "true"),
    ("ZTUNNEL_CPU_LIMIT", "4"),
    ("ZTUNNEL_RESOURCE_CPU_REQUEST", "1"),
];

/// What the chart sets only when asked: its optional values and profiles.
const CHART_OPTIONAL_ENV: [(&str, &str); 6] = [
    ("LOG_FORMAT", "json"),                                  // logAsJson
    ("NETWORK", "network-1"),                                // network
    ("ZTUNNEL_RESOURCE_CPU_LIMIT", "2"),                     // resources.limits.cpu
    ("CRL_PATH", "/var/run/secrets/istio/crl/ca-crl.pem"),   // peerCaCrl.enabled
    ("ISTIO_META_DNS_CAPTURE", "true"),                      // the preview profile
    ("XDS_ADDRESS", "istiod-canary.istio-system.svc:15012"), // revision: canary
];

/// Every variable the chart sets, by default and optionally, is accepted with ztunnel's
/// meaning; the ones zring lacks are listed for the start-up log, never refused.
#[test]
fn the_charts_environment_is_accepted() {
    let mut env: BTreeMap<String, String> = CHART_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into());
    let lookup = |env: &BTreeMap<String, String>| {
        let env = env.clone();
        zring::config::Config::from_lookup(move |k| env.get(k).cloned())
    };
    let c = lookup(&env).expect("the chart's default environment");
    assert_eq!(
        c.xds.as_ref().unwrap().address(),
        "https://istiod.istio-system.svc:15012"
    );
    assert_eq!(
        c.ca.as_ref().unwrap().address(),
        "https://istiod.istio-system.svc:15012"
    );
    assert!(c.xds.as_ref().unwrap().is_tls() && c.ca.as_ref().unwrap().is_tls());
    assert_eq!(c.cluster_id, "Kubernetes");
    assert_eq!(
        (c.node_name.as_str(), c.pod_name.as_str()),
        ("node-1", "ztunnel-x7k2p")
    );
    assert_eq!(c.instance_ip.to_string(), "10.244.1.7");
    assert_eq!(c.drain_deadline, std::time::Duration::from_secs(25));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.cores, cpus.min(4));
    assert!(c.not_implemented.is_empty(), "{:?}", c.not_implemented);
    for (k, _) in CHART_ENV {
        assert!(known(k), "{k}");
    }

    for (k, v) in CHART_OPTIONAL_ENV {
        assert!(known(k), "{k}");
        let mut env = env.clone();
        env.insert(k.into(), v.into());
        let c = lookup(&env).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
        match k {
            "LOG_FORMAT" => assert_eq!(c.log_format, zring::config::LogFormat::Json),
            "ZTUNNEL_RESOURCE_CPU_LIMIT" => assert_eq!(c.cores, cpus.min(2)),
            "XDS_ADDRESS" => assert_eq!(
                c.xds.as_ref().unwrap().address(),
                "https://istiod-canary.istio-system.svc:15012"
            ),
            "ISTIO_META_DNS_CAPTURE" => {
                assert!(c.dns.enabled && c.not_implemented.is_empty(), "{k}")
            }
            // Accepted, and named in the start-up log as not implemented.
            _ => assert_eq!(c.not_implemented.len(), 1, "{k}: {:?}", c.not_implemented),
        }
    }
}

#[test]
fn no_node_mode_container_gets_more_than_net_admin() {
    for path in [NODE, UNINSTALL] {
        let docs = documents(path);
        for ds in kind(&docs, "DaemonSet") {
            for c in containers(get(ds, "spec.template.spec")) {
                let caps = get(c, "securityContext.capabilities");
                assert_eq!(caps["drop"][0], "ALL", "{path}: {}", str_of(c, "name"));
                let added: Vec<&str> = caps["add"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    added.is_empty() || added == ["NET_ADMIN"],
                    "{path}: {} adds {added:?}",
                    str_of(c, "name")
                );
                assert_eq!(
                    get(c, "securityContext.allowPrivilegeEscalation"),
                    &Value::Bool(false)
                );
            }
        }
    }
}

#[test]
fn the_image_holds_what_the_init_containers_run() {
    let dockerfile = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    assert!(dockerfile.contains("COPY deploy/redirect.sh /usr/local/bin/zring-redirect"));
    assert!(dockerfile.contains("nftables") && dockerfile.contains("iproute2"));
    let docs = documents(NODE);
    let ds = kind(&docs, "DaemonSet")[0];
    let init = &get(ds, "spec.template.spec.initContainers")[0];
    assert_eq!(init["command"][0], "/usr/local/bin/zring-redirect");
    let script = std::fs::read_to_string("deploy/redirect.sh").unwrap();
    assert!(script.contains("\"$zring\" redirect apply"));
    let uninstall = documents(UNINSTALL);
    let init = &get(
        kind(&uninstall, "DaemonSet")[0],
        "spec.template.spec.initContainers",
    )[0];
    assert_eq!(
        init["args"],
        serde_yaml::from_str::<Value>("[redirect, remove]").unwrap()
    );
}
