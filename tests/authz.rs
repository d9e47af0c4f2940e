//! End to end, in network namespaces: L4 authorization enforced by real zring processes on the
//! HBONE inbound (15008), plaintext inbound (15006) and same-node direct paths, and re-checked
//! on open connections when policies change.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPA2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
const MIB: u64 = 1 << 20;

/// appa and appa2 (service account `appa`) and appc (`appc`) on node a, appb on node b, all
/// HBONE; `policies` is appended as the config's `policies:` list, `appb_extra` to appb.
fn config(policies: &str, appb_extra: &str) -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appa2, name: appa2, namespace: default, serviceAccount: appa, workloadIps: ["{APPA2}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appc, name: appc, namespace: default, serviceAccount: appc, workloadIps: ["{APPC}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["{APPB}"], protocol: HBONE, node: b {appb_extra}, services: {{}} }}
policies: {policies}
"#
    )
}

/// The seed's policy: only appa's identity may reach workloads in `default`.
const ALLOW_APPA: &str = r#"
- name: allow-appa
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa] }]]]
"#;

/// Denies appa's identity everywhere in `default`.
const DENY_APPA: &str = r#"
- name: deny-appa
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa] }]]]
"#;

fn mesh(config_text: &str) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    lab.add_pod("a", "appc", APPC).unwrap();
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    Mesh::start(lab, Path::new(ZRING), config_text, &["a", "b"], &[]).unwrap()
}

/// The allowed identity passes; another identity gets 401 from node b (and its client a reset
/// from node a); a plaintext client from outside the mesh is reset by node b's 15006.
#[test]
fn policy_admits_only_the_allowed_identity() {
    let m = mesh(&config(ALLOW_APPA, ""));
    m.serve("appb", 80, 1).unwrap();
    let r = m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged("b", r#"response_flags="-""#, 1)
        .unwrap();

    let denied = m.exchange("appc", (APPB, 80).into(), 1024, 1024);
    assert!(denied.is_err(), "appc passed: {denied:?}");
    m.eventually_logged("b", "unauthorized: deny: no ALLOW policy matched", 1)
        .unwrap();
    m.eventually_logged("a", "CONNECT refused with status 401", 1)
        .unwrap();
    for node in ["a", "b"] {
        let log = m.log(node);
        let line = log
            .lines()
            .find(|l| l.contains("complete dur=") && l.contains("10.244.1.10"))
            .unwrap_or_else(|| panic!("no access line for appc on {node}:\n{log}"));
        assert!(line.contains(r#"response_flags="DENY""#), "{line}");
    }

    let plain = m.exchange("ext", (APPB, 80).into(), 1024, 1024);
    assert!(plain.is_err(), "plaintext passed: {plain:?}");
    m.eventually_logged("b", "unauthorized: deny: no ALLOW policy matched", 2)
        .unwrap();
    // The allowed path still works after the refusals.
    m.serve("appb", 81, 1).unwrap();
    m.must_exchange("appa", (APPB, 81).into(), MIB, MIB);
}

/// The same-node direct path enforces the destination's policies on the source's node: appc
/// cannot reach appa2 next door, appa can.
#[test]
fn direct_local_is_authorized_on_the_source_node() {
    let m = mesh(&config(ALLOW_APPA, ""));
    m.serve("appa2", 80, 1).unwrap();
    m.must_exchange("appa", (APPA2, 80).into(), MIB, MIB);
    let denied = m.exchange("appc", (APPA2, 80).into(), 1024, 1024);
    assert!(denied.is_err(), "appc passed: {denied:?}");
    m.eventually_logged("a", "unauthorized: deny: no ALLOW policy matched", 1)
        .unwrap();
    assert!(!m.log("b").contains("complete dur="));
}

/// appb names a policy the snapshot does not hold: zring denies until it arrives (ztunnel
/// would let everything through), then allows once it does.
#[test]
fn a_referenced_policy_not_yet_received_denies() {
    let extra = r#", authorizationPolicies: ["default/late"]"#;
    let m = mesh(&config("[]", extra));
    m.serve("appb", 80, 1).unwrap();
    let r = m.exchange("appa", (APPB, 80).into(), 1024, 1024);
    assert!(r.is_err(), "passed without its policy: {r:?}");
    m.eventually_logged(
        "b",
        "policy default/late referenced but not yet received",
        1,
    )
    .unwrap();
    let late = r#"
- name: late
  namespace: default
  scope: WorkloadSelector
  action: Allow
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa] }]]]
"#;
    std::fs::write(&m.config, config(late, extra)).unwrap();
    m.eventually_logged("b", "policies=1", 1).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
}

/// Opens a connection from `pod` to `to` and proves it works with one echo round trip.
fn open(m: &Mesh, pod: &str, to: SocketAddr) -> TcpStream {
    let mut s = m
        .lab
        .pod(pod)
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{pod} → {to}: {e}\n{}", m.logs()));
    // Generous: a healthy echo answers at once and a closed connection reads EOF or a reset
    // at once, so this only matters on a loaded machine, where 1 s was seen to run out.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    s
}

/// Whether the connection still echoes: `false` once zring has closed or reset it.
fn still_echoes(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4];
    s.write_all(b"ping").is_ok() && matches!(s.read(&mut b), Ok(n) if n > 0)
}

/// Connections opened under a permissive policy keep working until a DENY for their source
/// is pushed; then every node closes its own: node b the HBONE one, node a the same-node one,
/// while a connection from an identity the new policy does not name stays up.
#[test]
fn a_policy_pushed_while_connections_are_open_closes_them() {
    let m = mesh(&config("[]", ""));
    m.echo("appb", 7000).unwrap();
    m.echo("appa2", 7000).unwrap();
    let mut hbone = open(&m, "appa", (APPB, 7000).into());
    let mut local = open(&m, "appa", (APPA2, 7000).into());
    let mut other = open(&m, "appc", (APPB, 7000).into());

    std::fs::write(&m.config, config(DENY_APPA, "")).unwrap();
    m.eventually_logged("b", "closing connections the new policies deny", 1)
        .unwrap();
    m.eventually_logged("a", "closing connections the new policies deny", 1)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while still_echoes(&mut hbone) || still_echoes(&mut local) {
        assert!(
            Instant::now() < deadline,
            "revoked connections still echo\n{}",
            m.logs()
        );
    }
    assert!(still_echoes(&mut other), "appc's connection was closed too");
    for node in ["a", "b"] {
        m.eventually_logged(
            node,
            "closed on policy change: deny: policy default/deny-appa",
            1,
        )
        .unwrap();
    }
    // New connections from appa are refused now, appc's still pass.
    m.serve("appb", 80, 1).unwrap();
    assert!(
        m.exchange("appa", (APPB, 80).into(), 16, 16).is_err(),
        "appa got through after the DENY"
    );
    m.must_exchange("appc", (APPB, 80).into(), MIB, MIB);
}

/// Denies appa's identity in a namespace none of these workloads is in.
const DENY_APPA_ELSEWHERE: &str = r#"
- name: deny-appa
  namespace: elsewhere
  scope: Namespace
  action: Deny
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa] }]]]
"#;

/// `zring_policy_rechecks_total` and `zring_policy_recheck_connections_total` on `node`:
/// (passes, visited, closed).
fn rechecks(m: &Mesh, node: &str) -> (f64, f64, f64) {
    let s = m.scrape(node);
    let conns = |result| {
        s.sum(
            "zring_policy_recheck_connections_total",
            &[("result", result)],
        )
    };
    (
        s.sum("zring_policy_rechecks_total", &[]),
        conns("visited"),
        conns("closed"),
    )
}

/// A policy change re-decides only the open connections it can affect: one in a namespace
/// without these workloads visits none on either node and closes nothing; one in their
/// namespace visits exactly the connections to its workloads and closes the denied one.
#[test]
fn a_policy_change_re_checks_only_the_connections_it_can_affect() {
    let m = mesh(&config("[]", ""));
    m.echo("appb", 7000).unwrap();
    m.echo("appa2", 7000).unwrap();
    let mut hbone = open(&m, "appa", (APPB, 7000).into());
    let mut local = open(&m, "appa", (APPA2, 7000).into());
    let mut other = open(&m, "appc", (APPB, 7000).into());
    for node in ["a", "b"] {
        let (_, visited, closed) = rechecks(&m, node);
        assert_eq!((visited, closed), (0.0, 0.0), "node {node}");
    }

    // Each core holding connections makes one pass per change (two cores per node here).
    std::fs::write(&m.config, config(DENY_APPA_ELSEWHERE, "")).unwrap();
    for node in ["a", "b"] {
        m.eventually(&format!("a re-check pass on node {node}"), || {
            rechecks(&m, node).0 >= 1.0
        })
        .unwrap();
        let (_, visited, closed) = rechecks(&m, node);
        assert_eq!((visited, closed), (0.0, 0.0), "node {node}");
    }
    assert!(still_echoes(&mut hbone) && still_echoes(&mut local) && still_echoes(&mut other));

    // Now in their namespace: node b decides its two connections (to appb) and closes appa's;
    // node a decides its one (appa → appa2, same node) and closes it. The totals are exact, so
    // they also prove the first change decided nothing on any core.
    std::fs::write(&m.config, config(DENY_APPA, "")).unwrap();
    for (node, visited) in [("a", 1.0), ("b", 2.0)] {
        m.eventually(&format!("the re-check passes on node {node}"), || {
            let (_, v, c) = rechecks(&m, node);
            v >= visited && c >= 1.0
        })
        .unwrap();
        let (passes, v, c) = rechecks(&m, node);
        assert!(passes >= 2.0, "node {node}: {passes} passes");
        assert_eq!((v, c), (visited, 1.0), "node {node}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while still_echoes(&mut hbone) || still_echoes(&mut local) {
        assert!(
            Instant::now() < deadline,
            "revoked connections still echo\n{}",
            m.logs()
        );
    }
    assert!(still_echoes(&mut other), "appc's connection was closed too");
}
