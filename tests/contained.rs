//! End to end, in network namespaces: faults inside zring are contained and noticed, through
//! the test-only fault hook (`ZRING_TEST_FAULTS`, which connections to chosen ports trip on the
//! node that accepts them, here node a's outbound listener):
//!
//! - a panic in one connection's task ends that connection only: the other connections of the
//!   same process keep flowing, new ones work, the panic is logged and counted
//!   (`zring_task_panics_total`), and the process stays ready and live;
//! - a core whose loop stops turning, or whose thread exits, makes the process unready and
//!   fails its liveness endpoint (`/healthz/live`, which the DaemonSets probe), with the reason.
//!
//! Also: the hook is refused in a Kubernetes pod. Needs root (namespaces, nftables,
//! IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use zring::lab::mesh::{READINESS_PORT, eventually};
use zring::lab::{Lab, Mesh, http};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const PANIC_PORT: u16 = 7001;
const STALL_PORT: u16 = 7002;
const EXIT_PORT: u16 = 7003;
const FAULTS: &str = "panic-port=7001,stall-port=7002,exit-port=7003";

const CONFIG: &str = r#"
workloads:
- { uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["10.244.1.8"], protocol: HBONE, node: a, services: {} }
- { uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["10.244.2.4"], protocol: HBONE, node: b, services: {} }
"#;

fn mesh() -> Mesh {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    // Not in a pod, even when the tests run in one: the hook is refused there.
    let env = [
        ("ZRING_TEST_FAULTS", FAULTS),
        ("KUBERNETES_SERVICE_HOST", ""),
    ];
    let m = Mesh::start(lab, Path::new(ZRING), CONFIG, &["a", "b"], &env).unwrap();
    for port in [80, PANIC_PORT, STALL_PORT, EXIT_PORT] {
        m.echo("appb", port).unwrap();
    }
    m
}

/// appa → appb:`port`, through both zrings; returns the connection once one exchange echoed
/// (or, with `echo` false, at once).
fn open(m: &Mesh, port: u16, echo: bool) -> TcpStream {
    let to = SocketAddr::from((APPB, port));
    let mut s = m
        .lab
        .pod("appa")
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("appa → {to}: {e}\n{}", m.logs()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if echo {
        exchange(&mut s).unwrap_or_else(|e| panic!("echo on {to}: {e}\n{}", m.logs()));
    }
    s
}

fn exchange(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"ping")?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    assert_eq!(&b, b"ping");
    Ok(())
}

/// The DaemonSets' liveness probe: `zring admin GET /healthz/live` over `node`'s admin socket;
/// whether it succeeded, and what it printed.
fn exec_probe(m: &Mesh, node: &str) -> (bool, String) {
    let out = std::process::Command::new(ZRING)
        .args(["admin", "GET", "/healthz/live"])
        .env("ZRING_ADMIN_SOCKET", m.admin_socket(node))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn probe(m: &Mesh, node: &str, path: &'static str) -> http::Answer {
    m.lab
        .node(node)
        .run(move || http::get(SocketAddr::from(([127, 0, 0, 1], READINESS_PORT)), path))
        .unwrap_or_else(|e| panic!("{path} on {node}: {e}"))
}

/// A panic in one connection's task: that connection ends (nobody closed it), the connection
/// beside it on the same process keeps flowing, a new one works, the panic is counted and
/// logged, nothing else is lost (the open-connection gauge comes back to the survivor), and
/// the process stays ready and live.
#[test]
fn a_panic_ends_only_its_connection() {
    let m = mesh();
    let mut survivor = open(&m, 80, true);
    let mut doomed = open(&m, PANIC_PORT, false);
    // The task panics while the connection is open; the client sees it end (EOF or reset),
    // without having closed it.
    let _ = doomed.write_all(b"ping");
    let mut buf = [0u8; 64];
    let ended = loop {
        match doomed.read(&mut buf) {
            Ok(0) => break "eof".to_owned(),
            Ok(_) => continue, // the echo, if it came back before the panic
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the panicked connection is still open\n{}", m.logs())
            }
            Err(e) => break e.to_string(),
        }
    };
    m.eventually_logged("a", "task panicked", 1).unwrap();
    let log = m.log("a");
    assert!(
        log.contains("ZRING_TEST_FAULTS: injected panic in a outbound connection"),
        "{log}"
    );
    // Its access-log record says so, and counts it failed.
    m.eventually_logged("a", "error=\"closed: the connection's task panicked\"", 1)
        .unwrap();
    eventually("the panic counted", || {
        let n = m.scrape("a").sum("zring_task_panics_total", &[]);
        (n == 1.0).then_some(()).ok_or(format!("{n}"))
    });
    // The rest of the process goes on: the connection beside it, and new ones.
    exchange(&mut survivor).unwrap_or_else(|e| panic!("survivor after the panic ({ended}): {e}"));
    let mut fresh = open(&m, 80, true);
    exchange(&mut fresh).unwrap();
    drop(fresh);
    eventually("only the survivor open on node a", || {
        let open = m.scrape("a").sum("zring_core_connections_open", &[]);
        (open == 1.0).then_some(()).ok_or(format!("{open}"))
    });
    exchange(&mut survivor).unwrap();
    for path in ["/healthz/ready", "/healthz/live"] {
        assert_eq!(probe(&m, "a", path).status, 200, "{path}\n{}", m.log("a"));
    }
    assert_eq!(exec_probe(&m, "a"), (true, "live\n".into()));
    eprintln!("the panicked connection ended with: {ended}");
    assert_eq!(m.scrape("a").sum("zring_cores_unhealthy", &[]), 0.0);
    assert!(
        m.zring("a").try_status().unwrap().is_none(),
        "zring a is still running"
    );
}

/// A core whose loop stops turning: readiness and liveness fail within the stall bound, and say
/// which core. The probes are served on their own thread, so they still answer.
#[test]
fn a_stalled_core_makes_the_process_unready_and_not_live() {
    let m = mesh();
    assert_eq!(probe(&m, "a", "/healthz/live").status, 200);
    assert_eq!(exec_probe(&m, "a"), (true, "live\n".into()));
    let _stalled = open(&m, STALL_PORT, false);
    eventually("node a unready", || {
        let a = probe(&m, "a", "/healthz/ready");
        (a.status == 503 && a.body.contains("stalled"))
            .then_some(())
            .ok_or(format!("{a:?}"))
    });
    let live = probe(&m, "a", "/healthz/live");
    assert_eq!(live.status, 503, "{live:?}");
    assert!(live.body.contains("stalled"), "{}", live.body);
    let (ok, said) = exec_probe(&m, "a");
    assert!(
        !ok && said.contains("stalled"),
        "the exec probe fails too: {said}"
    );
    assert!(m.log("a").contains("stalling this core's thread"));
    // Node b is untouched.
    assert_eq!(probe(&m, "b", "/healthz/live").status, 200);
    assert_eq!(m.scrape("a").sum("zring_cores_unhealthy", &[]), 1.0);
}

/// A core whose thread ends (a panic outside any contained task): the process is unready and
/// not live at once, and says which core exited; the rest of the process still answers.
#[test]
fn an_exited_core_makes_the_process_unready_and_not_live() {
    let m = mesh();
    let _ = open(&m, EXIT_PORT, false);
    eventually("node a not live", || {
        let a = probe(&m, "a", "/healthz/live");
        (a.status == 503 && a.body.contains("has exited"))
            .then_some(())
            .ok_or(format!("{a:?}"))
    });
    let ready = probe(&m, "a", "/healthz/ready");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("has exited"), "{}", ready.body);
    let (ok, said) = exec_probe(&m, "a");
    assert!(
        !ok && said.contains("has exited"),
        "the exec probe fails too: {said}"
    );
    assert!(m.log("a").contains("core thread exited"), "{}", m.log("a"));
    assert_eq!(m.scrape("a").sum("zring_cores_unhealthy", &[]), 1.0);
    assert!(
        m.zring("a").try_status().unwrap().is_none(),
        "the process lives on until the probe restarts it"
    );
}

/// In a Kubernetes pod (`KUBERNETES_SERVICE_HOST` set) zring refuses to start with the hook.
#[test]
fn the_fault_hook_is_refused_in_a_pod() {
    let out = std::process::Command::new(ZRING)
        .args(["run"])
        .env("ZRING_TEST_FAULTS", FAULTS)
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("PROXY_MODE", "node")
        .env("XDS_ADDRESS", "")
        .env("CA_ADDRESS", "")
        .env("ZRING_ADMIN_SOCKET", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ZRING_TEST_FAULTS is for tests only"), "{err}");
}
