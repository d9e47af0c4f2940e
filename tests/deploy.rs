//! The Kubernetes manifests in `deploy/` against the code they deploy: every variable they set
//! is one zring reads and accepts, the capture parameters make a valid ruleset, the probes and
//! annotations name zring's ports, and no container gets a capability beyond NET_ADMIN.
//! (Schema validation against the Kubernetes API is `.ci/run`'s `kubernetes-validate`.)

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

const MANIFESTS: [&str; 2] = ["deploy/zring.yaml", "deploy/zring-uninstall.yaml"];
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

#[test]
fn every_variable_is_one_zring_reads_and_accepts() {
    let docs = documents(MANIFESTS[0]);
    let data = config_map(&docs);
    let known = |name: &str| {
        zring::config::VARS.iter().any(|v| v.name == name) || REDIRECT_VARS.contains(&name)
    };
    for name in data.keys() {
        assert!(
            known(name),
            "ConfigMap sets {name}, which zring does not read"
        );
    }
    let ds = kind(&docs, "DaemonSet")[0];
    for c in containers(get(ds, "spec.template.spec")) {
        for e in c["env"].as_sequence().into_iter().flatten() {
            let name = str_of(e, "name");
            assert!(
                known(name),
                "{} sets {name}, which zring does not read",
                str_of(c, "name")
            );
        }
    }
    // The values parse, as `zring run` would read them (the pod's own fields filled in).
    let mut env = data.clone();
    env.insert("NODE_NAME".into(), "node-1".into());
    env.insert("INSTANCE_IP".into(), "10.0.0.5".into());
    zring::config::Config::from_lookup(|k| env.get(k).cloned()).expect("the ConfigMap is valid");
    zring::lab::Capture::parse(&data["ZRING_POD_CIDRS"], &data["ZRING_POD_INTERFACES"])
        .expect("the capture parameters are valid");
}

#[test]
fn probes_and_annotations_name_zrings_ports() {
    let docs = documents(MANIFESTS[0]);
    let ds = kind(&docs, "DaemonSet")[0];
    let pod = get(ds, "spec.template");
    assert_eq!(get(pod, "spec.hostNetwork"), &Value::Bool(true));
    let annotations = get(pod, "metadata.annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "15020");
    let zring = containers(&pod["spec"])
        .into_iter()
        .find(|c| c["name"] == "zring")
        .expect("a zring container");
    let probe = get(zring, "readinessProbe.httpGet");
    assert_eq!(probe["port"], 15021);
    assert_eq!(probe["path"], "/healthz/ready");
    assert!(zring::config::OWN_PORTS.contains(&15021) && zring::config::OWN_PORTS.contains(&15020));
}

#[test]
fn no_container_gets_more_than_net_admin() {
    for path in MANIFESTS {
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
    let docs = documents(MANIFESTS[0]);
    let ds = kind(&docs, "DaemonSet")[0];
    let init = &get(ds, "spec.template.spec.initContainers")[0];
    assert_eq!(init["command"][0], "/usr/local/bin/zring-redirect");
    let script = std::fs::read_to_string("deploy/redirect.sh").unwrap();
    assert!(script.contains("\"$zring\" redirect apply"));
    let uninstall = documents(MANIFESTS[1]);
    let init = &get(
        kind(&uninstall, "DaemonSet")[0],
        "spec.template.spec.initContainers",
    )[0];
    assert_eq!(
        init["args"],
        serde_yaml::from_str::<Value>("[redirect, remove]").unwrap()
    );
}
