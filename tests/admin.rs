//! End to end, in network namespaces: zring's admin (15000), readiness (15021) and log output as
//! an operator meets them: `/config_dump` holds the configured workloads in ztunnel's shape,
//! `/logging` changes what is logged at run time, the admin port answers loopback only,
//! `/quitquitquit` exits cleanly, readiness waits for the config, and `LOG_FORMAT=json` writes
//! access logs with ztunnel's field names. In node mode (the lab's) the TCP admin port is
//! read-only: mutating requests there are refused (403) and counted, and go through the admin
//! Unix socket instead (`zring admin`, or `admin::client`).
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use zring::lab::mesh::{ADMIN_PORT, READINESS_PORT, STATS_PORT, eventually};
use zring::lab::{Lab, Mesh, NodeProxy, Ready, http};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);

const CONFIG: &str = r#"
workloads:
- uid: Kubernetes//Pod/default/appa-7d9f
  name: appa-7d9f
  namespace: default
  serviceAccount: appa
  workloadName: appa
  workloadType: deployment
  canonicalName: appa
  canonicalRevision: v1
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
  services: {}
- uid: Kubernetes//Pod/default/appb-5c6d
  name: appb-5c6d
  namespace: default
  serviceAccount: appb
  workloadName: appb
  canonicalName: appb
  canonicalRevision: v2
  workloadIps: ["10.244.2.4"]
  protocol: HBONE
  node: b
  locality:
    region: eu
    zone: eu-1
    subzone: ""
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/10.96.101.203"]
  ports:
    8000: 80
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/appb"]
policies:
- name: appb-allow-appa
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/appa
"#;

fn mesh(nodes: &[&str], env: &[(&str, &str)]) -> Mesh {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    Mesh::start(lab, Path::new(ZRING), CONFIG, nodes, env).unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// GET or POST `path` on `port` of `node`'s loopback, from inside the node's namespace.
fn call(m: &Mesh, node: &str, method: &'static str, port: u16, path: &str) -> http::Answer {
    let owned = path.to_owned();
    m.lab
        .node(node)
        .run(move || http::request(local(port), method, &owned))
        .unwrap_or_else(|e| panic!("{method} {path} on node {node}: {e}\n{}", m.logs()))
}

/// A request to `node`'s admin Unix socket: (status, body).
fn on_socket(m: &Mesh, node: &str, method: &str, path: &str) -> (u16, String) {
    zring::admin::client::request(&m.admin_socket(node), method, path).unwrap_or_else(|e| {
        panic!(
            "{method} {path} on node {node}'s admin socket: {e}\n{}",
            m.logs()
        )
    })
}

/// `/config_dump` of node b, compared field by field with what ztunnel dumps for the same
/// local config.
#[test]
fn config_dump_holds_the_config_in_ztunnels_shape() {
    let m = mesh(&["a", "b"], &[]);
    let a = call(&m, "b", "GET", ADMIN_PORT, "/config_dump");
    assert_eq!(a.status, 200, "{a:?}");
    let dump: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        dump["workloads"],
        json!([
            {
                "workloadIps": ["10.244.1.8"],
                "protocol": "HBONE",
                "networkMode": "Standard",
                "uid": "Kubernetes//Pod/default/appa-7d9f",
                "name": "appa-7d9f",
                "namespace": "default",
                "trustDomain": "cluster.local",
                "serviceAccount": "appa",
                "workloadName": "appa",
                "workloadType": "deployment",
                "canonicalName": "appa",
                "canonicalRevision": "v1",
                "node": "a",
                "status": "Healthy",
                "clusterId": "Kubernetes",
                "capacity": 1
            },
            {
                "workloadIps": ["10.244.2.4"],
                "protocol": "HBONE",
                "networkMode": "Standard",
                "uid": "Kubernetes//Pod/default/appb-5c6d",
                "name": "appb-5c6d",
                "namespace": "default",
                "trustDomain": "cluster.local",
                "serviceAccount": "appb",
                "workloadName": "appb",
                "canonicalName": "appb",
                "canonicalRevision": "v2",
                "node": "b",
                "status": "Healthy",
                "clusterId": "Kubernetes",
                "locality": {"region": "eu", "zone": "eu-1", "subzone": ""},
                "services": ["default/appb.default.svc.cluster.local"],
                "capacity": 1
            }
        ]),
        "{}",
        a.body
    );
    assert_eq!(
        dump["services"],
        json!([{
            "name": "appb",
            "namespace": "default",
            "hostname": "appb.default.svc.cluster.local",
            "vips": ["/10.96.101.203"],
            "ports": {"8000": 80},
            "endpoints": {
                "Kubernetes//Pod/default/appb-5c6d": {
                    "workloadUid": "Kubernetes//Pod/default/appb-5c6d",
                    "port": {"8000": 80},
                    "status": "Healthy"
                }
            },
            "subjectAltNames": ["spiffe://cluster.local/ns/default/sa/appb"],
            "canonical": false
        }])
    );
    assert_eq!(
        dump["policies"],
        json!([{
            "name": "appb-allow-appa",
            "namespace": "default",
            "scope": "Namespace",
            "action": "Allow",
            "dryRun": false,
            "rules": [[[{"principals": [{"Exact": "cluster.local/ns/default/sa/appa"}]}]]]
        }])
    );
    // Node b holds appb's certificate only, issued by the mesh's development CA.
    let certs = dump["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(
        certs[0]["identity"],
        "spiffe://cluster.local/ns/default/sa/appb"
    );
    assert_eq!(certs[0]["state"], "Available");
    assert_eq!(certs[0]["certChain"].as_array().unwrap().len(), 1);
    assert_eq!(certs[0]["rootCerts"].as_array().unwrap().len(), 1);
    for k in ["pem", "serialNumber", "validFrom", "expirationTime"] {
        assert!(certs[0]["certChain"][0][k].is_string(), "{k}");
    }
    assert_eq!(dump["config"]["localNode"], "b");
    assert_eq!(
        dump["staticConfig"]["workloads"].as_array().unwrap().len(),
        2
    );
    assert_eq!(dump["version"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(dump["stagedServices"], json!({}));
}

/// `/logging`: GET shows the level; POST `?level=warn` stops info lines (the access log among
/// them) at once; `?level=info` brings them back. Each connection uploads a different size, so
/// its access line is recognisable by `bytes_sent` (16 header bytes + the upload).
#[test]
fn logging_changes_the_level_at_run_time() {
    let m = mesh(&["a", "b"], &[]);
    m.serve("appb", 80, 3).unwrap();
    let show = call(&m, "a", "GET", ADMIN_PORT, "/logging");
    assert_eq!(
        (show.status, show.body.as_str()),
        (200, "current log level is info\n")
    );
    m.must_exchange("appa", (APPB, 80).into(), 10, 10);
    m.eventually_logged("a", "bytes_sent=26 ", 1).unwrap();

    // Node mode: not on the host's loopback, where any host-network process could.
    let refused = call(&m, "a", "POST", ADMIN_PORT, "/logging?level=warn");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        call(&m, "a", "GET", ADMIN_PORT, "/logging").body,
        "current log level is info\n"
    );
    let set = on_socket(&m, "a", "POST", "/logging?level=warn");
    assert_eq!(set.1, "current log level is warn\n");
    m.must_exchange("appa", (APPB, 80).into(), 20, 10);
    // The proxy has finished with it once node a counts two closed connections.
    eventually("node a closes the second connection", || {
        let closed = m.scrape("a").sum("istio_tcp_connections_closed_total", &[]);
        (closed == 2.0)
            .then_some(())
            .ok_or(format!("closed {closed}"))
    });

    let set = on_socket(&m, "a", "POST", "/logging?level=info");
    assert_eq!(set.1, "current log level is info\n");
    m.must_exchange("appa", (APPB, 80).into(), 30, 10);
    m.eventually_logged("a", "bytes_sent=46 ", 1).unwrap();
    // Lines are written in order: had the warn-level connection been logged, its line would be
    // there before the third one's.
    let log = m.log("a");
    assert!(
        !log.contains("bytes_sent=36 "),
        "logged at warn level:\n{log}"
    );
    assert_eq!(log.matches("complete dur=").count(), 2, "{log}");
    let bad = on_socket(&m, "a", "POST", "/logging?level=chatty");
    assert_eq!(bad.0, 400);
}

/// The admin port answers on loopback only: the node's own address and other nodes get a
/// refused connection, while the metrics port serves them.
#[test]
fn admin_refuses_non_loopback_clients() {
    let m = mesh(&["a"], &[]);
    let node_ip = m.lab.node("a").underlay_ip();
    assert_eq!(call(&m, "a", "GET", ADMIN_PORT, "/").status, 200);
    for from in ["a", "b"] {
        let refused = m.lab.node(from).run(move || {
            TcpStream::connect_timeout(&(node_ip, ADMIN_PORT).into(), Duration::from_secs(5))
        });
        let err = refused.expect_err("the admin port must not accept from the node's address");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "from {from}: {err}"
        );
        let metrics = m
            .lab
            .node(from)
            .run(move || http::get((node_ip, STATS_PORT).into(), "/metrics"))
            .unwrap();
        assert_eq!(metrics.status, 200, "metrics from {from}");
    }
}

/// `POST /quitquitquit` answers, then the process exits with status 0; GET is refused. In node
/// mode a POST on the TCP admin port (the host's loopback) is refused (403) and counted; the
/// operator's `zring admin POST /quitquitquit` (the admin socket) stops it.
#[test]
fn quitquitquit_exits_cleanly() {
    let m = mesh(&["a"], &[]);
    let get = call(&m, "a", "GET", ADMIN_PORT, "/quitquitquit");
    assert_eq!(get.status, 405);
    assert!(
        m.zring("a").try_status().unwrap().is_none(),
        "GET must not stop zring"
    );
    let tcp = call(&m, "a", "POST", ADMIN_PORT, "/quitquitquit");
    assert_eq!(tcp.status, 403, "{tcp:?}");
    assert!(tcp.body.contains("admin socket"), "{}", tcp.body);
    assert_eq!(
        m.scrape("a").sum("zring_admin_writes_refused_total", &[]),
        1.0
    );
    assert_eq!(on_socket(&m, "a", "GET", "/quitquitquit").0, 405);
    assert!(
        m.zring("a").try_status().unwrap().is_none(),
        "a refused POST and a GET must not stop zring"
    );
    let post = std::process::Command::new(ZRING)
        .args(["admin", "POST", "/quitquitquit"])
        .env("ZRING_ADMIN_SOCKET", m.admin_socket("a"))
        .output()
        .unwrap();
    assert!(post.status.success(), "{post:?}");
    assert_eq!(String::from_utf8_lossy(&post.stdout), "shutdown now\n");
    let status = m.zring("a").wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status:?}\n{}", m.log("a"));
    let log = m.log("a");
    assert!(log.contains("shutdown requested on /quitquitquit"), "{log}");
    assert!(
        log.contains("zring exiting"),
        "the last line is flushed: {log}"
    );
}

/// Readiness: 200 on a node whose config is loaded; 503 (and why) on one still waiting for
/// istiod, whose failed xDS connections show in its metrics.
#[test]
fn readiness_waits_for_the_config() {
    let mut m = mesh(&["a"], &[]);
    let ready = call(&m, "a", "GET", READINESS_PORT, "/healthz/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    // Never `zring ready`: it serves only once the configuration is complete.
    let waiting_proxy = NodeProxy {
        ready: Ready::Logged("not serving yet".into()),
        ..NodeProxy::zring(Path::new(ZRING))
    };
    m.start_node_with(
        "b",
        waiting_proxy,
        &[
            ("LOCAL_XDS_PATH", ""),
            ("XDS_ADDRESS", "http://127.0.0.1:1"),
        ],
    )
    .unwrap();
    let waiting = call(&m, "b", "GET", READINESS_PORT, "/healthz/ready");
    assert_eq!(waiting.status, 503, "{waiting:?}");
    assert!(waiting.body.contains("istiod"), "{}", waiting.body);
    eventually("a failed xDS connection counted", || {
        let n = m.scrape("b").sum(
            "istio_xds_connection_terminations_total",
            &[("reason", "ConnectionError")],
        );
        (n >= 1.0).then_some(()).ok_or(format!("{n}"))
    });
    assert_eq!(
        call(&m, "b", "GET", READINESS_PORT, "/healthz/ready").status,
        503
    );
    assert!(!m.log("b").contains("zring ready"), "{}", m.log("b"));
}

/// `LOG_FORMAT=json`: one JSON object per line; the access log carries ztunnel's field names.
#[test]
fn json_access_logs_carry_ztunnels_field_names() {
    let m = mesh(&["a", "b"], &[("LOG_FORMAT", "json")]);
    m.serve("appb", 80, 1).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), 100, 200);
    m.eventually_logged("a", "complete dur=", 1).unwrap();
    let log = m.log("a");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "every line is JSON:\n{log}"
    );
    let access = lines
        .iter()
        .find(|l| l["target"] == "access")
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert_eq!(access["src.workload"], "appa-7d9f");
    assert_eq!(
        access["src.identity"],
        "spiffe://cluster.local/ns/default/sa/appa"
    );
    assert_eq!(access["dst.addr"], "10.244.2.4:80");
    assert_eq!(access["dst.hbone_addr"], "10.244.2.4:15008");
    assert_eq!(access["dst.workload"], "appb-5c6d");
    assert_eq!(
        access["dst.identity"],
        "spiffe://cluster.local/ns/default/sa/appb"
    );
    assert_eq!(access["direction"], "outbound");
    assert_eq!(access["bytes_sent"], 116);
    assert!(access["bytes_recv"].as_u64().unwrap() > 200);
    assert!(access["duration"].as_str().unwrap().ends_with("ms"));
    assert!(
        access["src.addr"]
            .as_str()
            .unwrap()
            .starts_with("10.244.1.8:")
    );
    assert!(access.get("error").is_none() || access["error"].is_null());
}
