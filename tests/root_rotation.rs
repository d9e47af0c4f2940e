//! Issue 15, item 8: the mesh trust bundle rotates without a restart. Three zring nodes in
//! network namespaces (node mode), each with its own development CA: node a signs with root
//! `Ra`, node b with `R1` (the old mesh root), node c with `R2` (the new one). Node a runs
//! throughout while its `trust-bundle.pem` goes through a rotation: `Ra + R1` (before), `Ra +
//! R1 + R2` (the overlap), `Ra + R2` (the old root removed).
//!
//! - Before: b's workloads reach appa; c's are refused (a does not trust `R2` yet).
//! - Overlap: both are accepted, in both directions (a verifies c's certificate as a server and
//!   as a client; a fresh connection from b still verifies).
//! - After: fresh connections from b to appa, and from appa to b, are refused (`R1` is gone);
//!   c's still work.
//!
//! Connections set up before a change keep running (TLS authenticated them once; a pooled HBONE
//! connection is reused until it closes), so each step checks connections with a source
//! identity not used before, which forces a new handshake.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zring::identity::{DevCa, TRUST_BUNDLE_FILE, pem_certificate};
use zring::lab::{Lab, Mesh, traffic};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 4);

/// appa on a; on b, one workload per step (each its own identity, so its own HBONE
/// connection); appc and appc2 on c.
const CONFIG: &str = r#"
workloads:
- { uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["10.244.1.8"], protocol: HBONE, node: a, services: {} }
- { uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["10.244.2.4"], protocol: HBONE, node: b, services: {} }
- { uid: b2, name: b2, namespace: default, serviceAccount: b2, workloadIps: ["10.244.2.5"], protocol: HBONE, node: b, services: {} }
- { uid: b3, name: b3, namespace: default, serviceAccount: b3, workloadIps: ["10.244.2.6"], protocol: HBONE, node: b, services: {} }
- { uid: appc, name: appc, namespace: default, serviceAccount: appc, workloadIps: ["10.244.3.4"], protocol: HBONE, node: c, services: {} }
- { uid: c2, name: c2, namespace: default, serviceAccount: c2, workloadIps: ["10.244.3.5"], protocol: HBONE, node: c, services: {} }
policies: []
"#;

/// Writes `dir`'s trust bundle atomically (a rename, as the kubelet swaps a ConfigMap).
fn write_bundle(dir: &Path, roots: &[&DevCa]) {
    let pem: String = roots.iter().map(|ca| pem_certificate(ca.root())).collect();
    let tmp = dir.join("trust-bundle.tmp");
    std::fs::write(&tmp, pem).unwrap();
    std::fs::rename(&tmp, dir.join(TRUST_BUNDLE_FILE)).unwrap();
}

fn serve(m: &Mesh, pod: &str) {
    let listener = m
        .lab
        .pod(pod)
        .run(|| std::net::TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    traffic::spawn_server(listener, None);
}

fn exchange(m: &Mesh, pod: &str, to: Ipv4Addr) -> Result<(), String> {
    let to = SocketAddr::from((to, 80));
    m.lab.pod(pod).run(move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        traffic::exchange(s, 1024, 1024, 3)
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

fn ok(m: &Mesh, pod: &str, to: Ipv4Addr, step: &str) {
    exchange(m, pod, to).unwrap_or_else(|e| panic!("{step}: {pod} → {to}: {e}\n{}", m.logs()));
}

fn refused(m: &Mesh, pod: &str, to: Ipv4Addr, step: &str) {
    assert!(
        exchange(m, pod, to).is_err(),
        "{step}: {pod} → {to} got through\n{}",
        m.logs()
    );
}

#[test]
fn trust_bundle_rotates_without_restart() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("b", "b2", Ipv4Addr::new(10, 244, 2, 5))
        .unwrap();
    lab.add_pod("b", "b3", Ipv4Addr::new(10, 244, 2, 6))
        .unwrap();
    lab.add_pod("c", "appc", APPC).unwrap();
    lab.add_pod("c", "c2", Ipv4Addr::new(10, 244, 3, 5))
        .unwrap();
    let dirs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| lab.dir().join(format!("ca-{n}")))
        .collect();
    let cas: Vec<DevCa> = dirs
        .iter()
        .map(|d| DevCa::load_or_create(d).unwrap())
        .collect();
    let (ra, r1, r2) = (&cas[0], &cas[1], &cas[2]);
    write_bundle(&dirs[0], &[ra, r1]);
    write_bundle(&dirs[1], &[ra, r1]);
    write_bundle(&dirs[2], &[ra, r2]);

    let mut m = Mesh::start(lab, Path::new(ZRING), CONFIG, &[], &[]).unwrap();
    for (node, dir) in ["a", "b", "c"].iter().zip(&dirs) {
        m.lab.redirect(m.lab.node(node)).unwrap();
        let dir = dir.to_string_lossy().into_owned();
        m.start_node(node, &[("ZRING_DEV_CA_DIR", &dir)]).unwrap();
    }
    for pod in ["appa", "appb", "appc"] {
        serve(&m, pod);
    }
    // The bundle found at start counts as the first rotation.
    m.eventually_logged("a", "trust bundle rotated", 1).unwrap();

    // Before: a trusts R1 (b), not R2 (c).
    ok(&m, "appb", APPA, "before");
    refused(&m, "appc", APPA, "before");

    // The overlap: R1 and R2 both accepted, in both directions.
    write_bundle(&dirs[0], &[ra, r1, r2]);
    m.eventually_logged("a", "trust bundle rotated", 2).unwrap();
    ok(&m, "c2", APPA, "overlap (R2 client)");
    ok(&m, "appa", APPC, "overlap (R2 server)");
    ok(&m, "b2", APPA, "overlap (R1 client, new connection)");

    // The old root removed: fresh R1 handshakes fail both ways, R2 keeps working.
    write_bundle(&dirs[0], &[ra, r2]);
    m.eventually_logged("a", "trust bundle rotated", 3).unwrap();
    refused(&m, "b3", APPA, "after (R1 client)");
    refused(&m, "appa", APPB, "after (R1 server)");
    ok(&m, "appc", APPA, "after (R2 client)");
    ok(&m, "appa", APPC, "after (R2 server)");
    // Nothing restarted: node a's process logged `zring ready` once.
    assert_eq!(m.log("a").matches("zring ready").count(), 1);
    // Refused by certificate verification, not by anything else: node a rejected c's client
    // before the overlap and b3's after it.
    let log = m.log("a");
    assert!(log.matches("UnknownIssuer").count() >= 2, "{log}");
}
