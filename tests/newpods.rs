//! Connections that come before the configuration knows their pod wait for it, bounded (5 s,
//! as ztunnel waits for its pod's workload), then proceed or fail with `NO_WORKLOAD`; every
//! wait is counted in `zring_workload_waits_total{direction,result}`.
//!
//! Checked, in node mode (`Mesh::start`, each node reading its own config file so the two can
//! disagree, as two nodes' snapshots do for a moment when a pod starts) and in-pod mode
//! (`Mesh::start_inpod`, node b's agent enrolling appb before node b's config has it):
//! - appa's connection waits on node a for its source (outbound) while node a's config lacks
//!   appa, then on node b for its destination (inbound, 15008) while node b's config lacks appb;
//!   each config edit lets it go on, and it completes end to end;
//! - a source that never arrives is refused after the bound, recorded `NO_WORKLOAD`.
//!
//! Runs as root under `cargo test`. Waits are conditions with deadlines, never sleeps.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zring::inpod::WorkloadInfo;
use zring::lab::cni::{self, InpodRules};
use zring::lab::traffic::Report;
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// On node a, never in any config.
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 66);
const KIB: u64 = 1 << 10;

fn workload(name: &str, ip: Ipv4Addr, node: &str) -> String {
    format!(
        "- {{ uid: Kubernetes//Pod/default/{name}, name: {name}, namespace: default, \
         serviceAccount: {name}, workloadIps: [\"{ip}\"], protocol: HBONE, node: {node}, \
         services: {{}} }}\n"
    )
}

/// A config with `workloads` (appa, appb) and no services or policies.
fn config(appa: bool, appb: bool) -> String {
    let mut text = String::from("workloads:\n");
    if appa {
        text += &workload("appa", APPA, "a");
    }
    if appb {
        text += &workload("appb", APPB, "b");
    }
    if !appa && !appb {
        text = "workloads: []\n".into();
    }
    text + "services: []\npolicies: []\n"
}

/// Writes `text` to `path` in one rename, so the poller never reads half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Node b's own config file, beside the mesh's (which node a reads).
fn config_b(m: &Mesh) -> PathBuf {
    m.config.with_file_name("config-b.yaml")
}

/// appa → appb:80 on its own thread (it waits on zring).
fn exchange_from_appa(m: &Mesh) -> JoinHandle<Result<Report, String>> {
    m.lab.pod("appa").spawn(|| {
        let to = SocketAddr::from((APPB, 80));
        let s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10))
            .map_err(|e| format!("connect {to}: {e}"))?;
        zring::lab::traffic::exchange(s, 64 * KIB, 64 * KIB, 7).map_err(|e| e.to_string())
    })
}

fn waits(m: &Mesh, node: &str, direction: &str, result: &str) -> f64 {
    m.scrape(node).sum(
        "zring_workload_waits_total",
        &[("direction", direction), ("result", result)],
    )
}

/// The connection waits on node a for its source, then on node b for its destination; each
/// config edit releases it.
fn waits_for_source_then_destination(m: &Mesh) {
    m.serve("appb", 80, 1).unwrap();
    let conn = exchange_from_appa(m);
    m.eventually_logged("a", "waiting for source workload 10.244.1.8", 1)
        .unwrap();
    write(&m.config, &config(true, true));
    m.eventually_logged("b", "waiting for destination workload 10.244.2.4", 1)
        .unwrap();
    assert!(
        !conn.is_finished(),
        "the connection did not wait:\n{}",
        m.logs()
    );
    write(&config_b(m), &config(true, true));
    let r = conn
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("appa → appb after both edits: {e}\n{}", m.logs()));
    assert_eq!((r.uploaded, r.downloaded), (64 * KIB, 64 * KIB));
    assert_eq!(r.peer_seen_by_server.ip(), APPA, "the real client");
    m.eventually_logged("a", "source workload 10.244.1.8 arrived while", 1)
        .unwrap();
    m.eventually_logged("b", "destination workload 10.244.2.4 arrived while", 1)
        .unwrap();
    assert_eq!(waits(m, "a", "outbound", "found"), 1.0, "{}", m.logs());
    assert_eq!(waits(m, "b", "inbound", "found"), 1.0, "{}", m.logs());
    assert_eq!(waits(m, "a", "outbound", "timeout"), 0.0);
    assert_eq!(waits(m, "b", "inbound", "timeout"), 0.0);
    // Known now: no more waits.
    m.serve("appb", 81, 1).unwrap();
    m.must_exchange("appa", (APPB, 81).into(), KIB, KIB);
    assert_eq!(waits(m, "a", "outbound", "found"), 1.0);
}

/// Node mode, both nodes capturing every pod address (so node b takes appb's 15008 before its
/// config knows appb): node a starts without appa, node b without appb.
#[test]
fn node_mode_connection_waits_for_new_pods() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.capture_every_pod_address();
    lab.add_pod("a", "stranger", STRANGER).unwrap();
    let mut m = Mesh::start(lab, Path::new(ZRING), &config(false, true), &["a"], &[]).unwrap();
    let b = config_b(&m);
    write(&b, &config(true, false));
    m.lab.redirect(m.lab.node("b")).unwrap();
    m.start_node("b", &[("LOCAL_XDS_PATH", b.to_str().unwrap())])
        .unwrap();
    waits_for_source_then_destination(&m);

    // A source that never arrives: refused after the bound, recorded NO_WORKLOAD.
    let started = Instant::now();
    let refused = m.exchange("stranger", (APPB, 80).into(), KIB, KIB);
    let took = started.elapsed();
    assert!(refused.is_err(), "unknown source passed: {refused:?}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "refused after {took:?}, not after the 5 s bound"
    );
    m.eventually_logged(
        "a",
        "unknown source workload 10.244.1.66: not in the configuration after waiting",
        1,
    )
    .unwrap();
    m.eventually_logged("a", r#"response_flags="NO_WORKLOAD""#, 1)
        .unwrap();
    assert_eq!(waits(&m, "a", "outbound", "timeout"), 1.0, "{}", m.logs());
    let flagged = m.scrape("a").sum(
        "istio_tcp_connections_closed_total",
        &[("response_flags", "NO_WORKLOAD")],
    );
    assert_eq!(flagged, 1.0);
}

/// In-pod mode: node a's agent enrolls appa before node a's config has it (by hand: the lab's
/// agent enrolls only the pods the config knows), node b's enrolls appb while node b's config
/// lacks it.
#[test]
fn inpod_connection_waits_for_new_pods() {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    let mut m =
        Mesh::start_inpod(lab, Path::new(ZRING), &config(false, true), &["a"], &[]).unwrap();
    let b = config_b(&m);
    write(&b, &config(true, false));
    m.start_node("b", &[("LOCAL_XDS_PATH", b.to_str().unwrap())])
        .unwrap();
    let ns = m.lab.pod("appa").netns().clone();
    cni::install_rules(&ns, InpodRules { dns: false }).unwrap();
    let info = WorkloadInfo {
        name: "appa".into(),
        namespace: "default".into(),
        service_account: "appa".into(),
    };
    m.agent("a")
        .add("Kubernetes//Pod/default/appa", &info, &ns)
        .unwrap()
        .unwrap();
    waits_for_source_then_destination(&m);
}
