//! The admin, metrics and readiness servers in-process, over real sockets on loopback: routes,
//! status codes, the dump's shape, run-time log levels and `/quitquitquit`.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::Value as Json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, reload};

use super::*;
use crate::identity::{DevCa, local_identities};
use crate::lab::http;
use crate::metrics::Registry;
use crate::xds::client::InitialSync;

const MESH: &str = r#"
workloads:
- uid: Kubernetes//Pod/default/zz-appb
  name: appb-1
  namespace: default
  serviceAccount: appb
  workloadIps: ["10.244.2.4"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
- uid: Kubernetes//Pod/default/appa
  name: appa-1
  namespace: default
  serviceAccount: appa
  workloadName: appa
  canonicalName: appa
  canonicalRevision: v1
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
- uid: Kubernetes//Pod/default/appc
  name: appc-1
  namespace: default
  serviceAccount: appc
  workloadIps: ["10.244.1.10"]
  node: a
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
  rules:
  - - - principals:
        - Exact: cluster.local/ns/default/sa/appa
"#;

/// A running set of servers on ephemeral loopback ports, on a control-like thread.
struct Servers {
    addrs: HashMap<Server, SocketAddr>,
    state: State,
    ca: DevCa,
    /// Receives `()` when `/quitquitquit` made `serve` give way.
    stopped: mpsc::Receiver<()>,
    /// The admin socket, when started in node mode's shape ([`Servers::start_node`]).
    socket: Option<std::path::PathBuf>,
}

impl Servers {
    fn start(xds_pending: bool, logs: Option<LogControl>) -> Servers {
        Servers::start_with(xds_pending, logs, false)
    }

    /// Node mode's shape: the TCP admin listener read-only, an admin socket beside it.
    fn start_node(logs: Option<LogControl>) -> Servers {
        Servers::start_with(false, logs, true)
    }

    fn start_with(xds_pending: bool, logs: Option<LogControl>, node: bool) -> Servers {
        Servers::start_limited(xds_pending, logs, node, |l| l)
    }

    /// With `bound` applied to the listeners before they are served (other limits).
    fn start_limited(
        xds_pending: bool,
        logs: Option<LogControl>,
        node: bool,
        bound: impl FnOnce(Listeners) -> Listeners,
    ) -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, MESH).unwrap();
        let config = Config::from_lookup(|k| match k {
            "NODE_NAME" => Some("a".into()),
            "LOCAL_XDS_PATH" => Some(file.display().to_string()),
            _ => None,
        })
        .unwrap();
        let snapshot = crate::xds::local::parse(MESH).unwrap();
        let ca = DevCa::generate().unwrap();
        // appa has its certificate; appc (also on node a) has none yet.
        let appa = Identity::parse("spiffe://cluster.local/ns/default/sa/appa").unwrap();
        let store = ca
            .empty_store()
            .unwrap()
            .with_certs([ca.issue(&appa).unwrap()]);
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            snapshot: ArcSwap::from_pointee(snapshot),
            certs: ArcSwap::from_pointee(store),
            metrics: Arc::new(Registry::new()),
            drain: crate::drain::Drain::new(1, std::time::Duration::from_secs(1)),
            own_addrs: ArcSwap::default(),
            policy_changes: Default::default(),
            health: crate::core::Health::new(2),
            faults: Default::default(),
        });
        let sync = if xds_pending {
            InitialSync::pending()
        } else {
            InitialSync::complete()
        };
        let state = State {
            shared,
            readiness: Arc::new(Readiness::new(sync)),
            logs,
            cert_failures: Arc::default(),
            shutdown: Arc::default(),
            admin_metrics: Arc::default(),
        };
        state.watch_metrics();
        let listeners = Listeners::bind_addrs([
            (Server::Admin, "127.0.0.1:0".parse().unwrap()),
            (Server::Stats, "127.0.0.1:0".parse().unwrap()),
            (Server::Readiness, "127.0.0.1:0".parse().unwrap()),
        ])
        .unwrap();
        let mut listeners = bound(listeners);
        let socket = node.then(|| dir.path().join("run/admin.sock"));
        if let Some(path) = &socket {
            listeners = listeners.tcp_writes(false).with_socket(path).unwrap();
        }
        let addrs = listeners.addrs().into_iter().collect();
        let (tx, stopped) = mpsc::channel();
        let served = state.clone();
        std::thread::spawn(move || {
            let _dir = dir;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let shutdown = served.shutdown.clone();
                tokio::select! {
                    () = serve(listeners, served) => {}
                    () = shutdown.notified() => {}
                }
            });
            let _ = tx.send(());
        });
        Servers {
            addrs,
            state,
            ca,
            stopped,
            socket,
        }
    }

    fn get(&self, server: Server, path: &str) -> http::Answer {
        http::get(self.addrs[&server], path).unwrap()
    }

    fn post(&self, server: Server, path: &str) -> http::Answer {
        http::post(self.addrs[&server], path).unwrap()
    }
}

#[test]
fn readiness_is_503_until_cores_and_config_are_there() {
    // The configuration is awaited first (the cores start only once it is complete).
    let s = Servers::start(true, None);
    let a = s.get(Server::Readiness, "/healthz/ready");
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.body.contains("istiod"), "{}", a.body);
    s.state.readiness.cores_started();
    let a = s.get(Server::Readiness, "/healthz/ready");
    assert_eq!(a.status, 503);
    assert!(a.body.contains("istiod"), "{}", a.body);
    let ready = Servers::start(false, None);
    let a = ready.get(Server::Readiness, "/healthz/ready");
    assert_eq!(a.status, 503);
    assert!(a.body.contains("cores"), "{}", a.body);
    ready.state.readiness.cores_started();
    let a = ready.get(Server::Readiness, "/healthz/ready");
    assert_eq!((a.status, a.body.as_str()), (200, "ready\n"));
    assert_eq!(ready.get(Server::Readiness, "/config_dump").status, 404);
}

#[test]
fn metrics_on_both_paths_and_nothing_else() {
    let s = Servers::start(false, None);
    for path in ["/metrics", "/stats/prometheus"] {
        let a = s.get(Server::Stats, path);
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(
            a.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(a.body.contains("# TYPE istio_build gauge"), "{}", a.body);
    }
    for path in ["/config_dump", "/quitquitquit", "/"] {
        assert_eq!(s.get(Server::Stats, path).status, 404, "{path}");
    }
    assert_eq!(s.get(Server::Admin, "/metrics").status, 404);
    let index = s.get(Server::Admin, "/");
    assert_eq!(index.status, 200);
    assert!(index.body.contains("config_dump") && index.body.contains("quitquitquit"));
}

#[test]
fn config_dump_has_ztunnels_shape() {
    let s = Servers::start(false, None);
    let appc = Identity::parse("spiffe://cluster.local/ns/default/sa/appc").unwrap();
    let a = s.get(Server::Admin, "/config_dump");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let dump: Json = serde_json::from_str(&a.body).unwrap();
    let keys: Vec<&str> = dump
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "workloads",
        "services",
        "policies",
        "stagedServices",
        "staticConfig",
        "version",
        "config",
        "certificates",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    // Workloads sorted by uid, camelCase, empty optional fields left out.
    let uids: Vec<&str> = dump["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        [
            "Kubernetes//Pod/default/appa",
            "Kubernetes//Pod/default/appc",
            "Kubernetes//Pod/default/zz-appb"
        ]
    );
    let appa = &dump["workloads"][0];
    assert_eq!(
        appa,
        &serde_json::json!({
            "workloadIps": ["10.244.1.8"],
            "protocol": "HBONE",
            "networkMode": "Standard",
            "uid": "Kubernetes//Pod/default/appa",
            "name": "appa-1",
            "namespace": "default",
            "trustDomain": "cluster.local",
            "serviceAccount": "appa",
            "workloadName": "appa",
            "canonicalName": "appa",
            "canonicalRevision": "v1",
            "node": "a",
            "status": "Healthy",
            "clusterId": "Kubernetes",
            "capacity": 1
        })
    );
    assert_eq!(
        dump["workloads"][2]["services"],
        serde_json::json!(["default/appb.default.svc.cluster.local"])
    );
    let svc = &dump["services"][0];
    assert_eq!(svc["hostname"], "appb.default.svc.cluster.local");
    assert_eq!(svc["vips"], serde_json::json!(["/10.96.101.203"]));
    assert_eq!(svc["ports"], serde_json::json!({"8000": 80}));
    assert_eq!(
        svc["endpoints"]["Kubernetes//Pod/default/zz-appb"],
        serde_json::json!({"workloadUid": "Kubernetes//Pod/default/zz-appb", "port": {"8000": 80}, "status": "Healthy"})
    );
    let policy = &dump["policies"][0];
    assert_eq!(
        (
            &policy["name"],
            &policy["namespace"],
            &policy["action"],
            &policy["scope"],
            &policy["dryRun"]
        ),
        (
            &Json::from("allow-appa"),
            &Json::from("default"),
            &Json::from("Allow"),
            &Json::from("Namespace"),
            &Json::from(false)
        )
    );
    assert_eq!(dump["stagedServices"], serde_json::json!({}));
    assert_eq!(
        dump["staticConfig"]["workloads"].as_array().unwrap().len(),
        3
    );
    assert_eq!(dump["version"]["version"], "0.1.0");
    assert_eq!(dump["config"]["localNode"], "a");
    assert_eq!(dump["config"]["clusterId"], "Kubernetes");
    assert_eq!(dump["config"]["adminAddr"], "127.0.0.1:15000");
    // Certificates: appa's available with chain and roots, appc's not issued yet.
    let certs = dump["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert_eq!(
        certs[0]["identity"],
        "spiffe://cluster.local/ns/default/sa/appa"
    );
    assert_eq!(certs[0]["state"], "Available");
    let leaf = &certs[0]["certChain"][0];
    let pem = crate::identity::pem_certificate(
        s.state
            .shared
            .certs
            .load()
            .get(&Identity::parse("spiffe://cluster.local/ns/default/sa/appa").unwrap())
            .unwrap()
            .chain()[0]
            .as_ref(),
    );
    assert_eq!(leaf["pem"], crate::identity::base64(pem.as_bytes()));
    let serial = leaf["serialNumber"].as_str().unwrap();
    assert!(
        !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit()),
        "{serial}"
    );
    for field in ["validFrom", "expirationTime"] {
        let t = leaf[field].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(t, &Rfc3339Check).is_ok() && t.ends_with('Z'),
            "{field}: {t}"
        );
    }
    assert_eq!(
        certs[0]["rootCerts"][0]["pem"],
        crate::identity::base64(crate::identity::pem_certificate(s.ca.root()).as_bytes())
    );
    assert_eq!(certs[1]["identity"], appc.to_string());
    assert_eq!(certs[1]["state"], "Initializing");
    // A failed request shows as Unavailable with its error.
    s.state.cert_failures.record(
        &s.state.shared.certs.load(),
        &[(appc.clone(), crate::identity::Error::CaResponse("no chain"))],
    );
    let dump: Json = serde_json::from_str(&s.get(Server::Admin, "/config_dump").body).unwrap();
    assert_eq!(
        dump["certificates"][1]["state"],
        "Unavailable: Istio CA response: no chain"
    );
    assert_eq!(
        local_identities(&s.state.shared.snapshot.load(), "a").len(),
        2,
        "the dump lists exactly the node's identities"
    );
}

use time::format_description::well_known::Rfc3339 as Rfc3339Check;

#[test]
fn logging_shows_and_changes_levels() {
    let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
    let subscriber = tracing_subscriber::registry().with(filter);
    let logs = LogControl::new(handle, "info".into(), None);
    let s = Servers::start(false, Some(logs));
    let a = s.get(Server::Admin, "/logging");
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "current log level is info\n")
    );
    let a = s.post(Server::Admin, "/logging?level=debug");
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "current log level is debug\n")
    );
    let a = s.post(Server::Admin, "/logging?level=access%3Dtrace");
    assert_eq!(a.body, "current log level is access=trace,debug\n");
    let a = s.post(Server::Admin, "/logging?level=chatty");
    assert_eq!(a.status, 400);
    assert!(a.body.contains("usage:"), "{}", a.body);
    let a = s.post(Server::Admin, "/logging");
    assert_eq!(
        a.body, "current log level is access=trace,debug\n",
        "POST alone lists"
    );
    let a = s.post(Server::Admin, "/logging?reset");
    assert_eq!(a.body, "current log level is info\n");
    assert_eq!(s.request_status("PUT", "/logging"), 405);
    // The change is the filter in force, not just text.
    s.post(Server::Admin, "/logging?level=warn");
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        assert!(!tracing::enabled!(tracing::Level::INFO));
        assert!(tracing::enabled!(tracing::Level::WARN));
    });
    // Without a log control the endpoint says so instead of pretending.
    let bare = Servers::start(false, None);
    assert_eq!(bare.get(Server::Admin, "/logging").status, 500);
}

impl Servers {
    fn request_status(&self, method: &str, path: &str) -> u16 {
        http::request(self.addrs[&Server::Admin], method, path)
            .unwrap()
            .status
    }
}

#[test]
fn quitquitquit_answers_then_stops_the_control_loop() {
    let s = Servers::start(false, None);
    assert_eq!(s.get(Server::Admin, "/quitquitquit").status, 405);
    assert!(
        s.stopped.try_recv().is_err(),
        "a GET must not shut anything down"
    );
    let a = s.post(Server::Admin, "/quitquitquit");
    assert_eq!((a.status, a.body.as_str()), (200, "shutdown now\n"));
    s.stopped
        .recv_timeout(http::TIMEOUT)
        .expect("the control loop stops after answering");
}

#[test]
fn query_strings_decode() {
    let q = query_params("level=access%3Ddebug%2Cinfo&reset&x=a+b&bad=%zz&cut=%4");
    assert_eq!(q["level"], "access=debug,info");
    assert_eq!(q["reset"], "");
    assert_eq!(q["x"], "a b");
    assert_eq!(q["bad"], "%zz");
    assert_eq!(q["cut"], "%4");
    assert!(query_params("").is_empty());
}

#[test]
fn dump_certificates_for_identities_without_state() {
    let ca = DevCa::generate().unwrap();
    let id = Identity::parse("spiffe://cluster.local/ns/x/sa/y").unwrap();
    let store = ca
        .empty_store()
        .unwrap()
        .with_certs([ca.issue(&id).unwrap()]);
    let wanted = std::collections::BTreeSet::new();
    // Held but no longer wanted: still listed (until the manager drops it).
    let dumped = config_dump::certificates(&store, &wanted, &BTreeMap::new(), SystemTime::now());
    assert_eq!(dumped.len(), 1);
    assert_eq!(dumped[0].state, "Available");
    let later = SystemTime::now() + std::time::Duration::from_secs(3 * 24 * 3600);
    let dumped = config_dump::certificates(&store, &wanted, &BTreeMap::new(), later);
    assert_eq!(dumped[0].state, "Unavailable: the certificate expired");
}

/// Node mode: on TCP the admin listener serves reads only; every mutating request is refused
/// (403) and counted, and changes nothing. The same requests through the admin socket work.
#[test]
fn node_mode_mutates_through_the_socket_only() {
    let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
    let _subscriber = tracing_subscriber::registry().with(filter);
    let s = Servers::start_node(Some(LogControl::new(handle, "info".into(), None)));
    let socket = s.socket.clone().unwrap();
    assert_eq!(
        s.get(Server::Admin, "/logging").status,
        200,
        "reads stay on TCP"
    );
    assert_eq!(s.get(Server::Admin, "/config_dump").status, 200);
    for path in ["/logging?level=debug", "/quitquitquit", "/logging"] {
        let a = s.post(Server::Admin, path);
        assert_eq!(a.status, 403, "POST {path}: {a:?}");
        assert!(a.body.contains("admin socket"), "{}", a.body);
    }
    assert_eq!(s.request_status("PUT", "/logging?level=debug"), 403);
    assert!(
        s.stopped.try_recv().is_err(),
        "a refused quit stops nothing"
    );
    assert_eq!(
        s.get(Server::Admin, "/logging").body,
        "current log level is info\n",
        "a refused change changes nothing"
    );
    assert_eq!(s.state.admin_metrics.refused_writes(), 4);
    let scrape = s.get(Server::Stats, "/metrics").body;
    assert!(
        scrape.contains("zring_admin_writes_refused_total 4"),
        "{scrape}"
    );
    let (status, body) = client::request(&socket, "GET", "/config_dump").unwrap();
    assert_eq!(status, 200, "reads on the socket too");
    assert!(body.contains("workloads"), "{body}");
    let (status, body) = client::request(&socket, "POST", "/logging?level=debug").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "current log level is debug\n")
    );
    let (status, body) = client::request(&socket, "POST", "/quitquitquit").unwrap();
    assert_eq!((status, body.as_str()), (200, "shutdown now\n"));
    s.stopped
        .recv_timeout(http::TIMEOUT)
        .expect("the control loop stops after answering on the socket");
}

/// Liveness judges the cores and the control thread only; readiness also needs them. A core
/// that stalls or exits fails both.
#[test]
fn liveness_and_readiness_follow_the_cores() {
    let s = Servers::start(false, None);
    let live = s.get(Server::Readiness, "/healthz/live");
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, "live\n"),
        "nothing started"
    );
    s.state.readiness.cores_started();
    let health = &s.state.shared.health;
    health.beat(0);
    health.beat(1);
    health.beat_control();
    assert_eq!(s.get(Server::Readiness, "/healthz/ready").status, 200);
    health.set_beat_ago(1, crate::core::health::CORE_STALL * 2);
    for path in ["/healthz/ready", "/healthz/live"] {
        let a = s.get(Server::Readiness, path);
        assert_eq!(a.status, 503, "{path}: {a:?}");
        assert!(a.body.contains("core 1 stalled"), "{}", a.body);
    }
    let scrape = s.get(Server::Stats, "/metrics").body;
    assert!(scrape.contains("zring_cores_unhealthy 1"), "{scrape}");
    assert!(
        scrape.contains("# TYPE zring_task_panics_total counter"),
        "{scrape}"
    );
    health.beat(1);
    assert_eq!(s.get(Server::Readiness, "/healthz/live").status, 200);
    drop(health.alive(0));
    let a = s.get(Server::Readiness, "/healthz/live");
    assert_eq!(
        (a.status, a.body.as_str()),
        (503, "not live: core 0 has exited\n")
    );
}

mod flood;
