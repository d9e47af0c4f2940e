//! Capture watched (issue 15, item 4), end to end with real zring processes in node mode: a
//! flushed ruleset, a deleted table, an edited chain and a lost policy route on node a are each
//! noticed, counted by reason and put back, and appa's traffic is captured again afterwards
//! (the restored rules' own counters carry it); with restoring turned off
//! (`ZRING_CAPTURE_RESTORE=false`) node a is unready while its table is missing and ready
//! again once `zring redirect apply`'s rules are back, its set refilled.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use zring::lab::mesh::{READINESS_PORT, eventually};
use zring::lab::{Lab, Mesh, RuleCounter, http, traffic};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const KIB: u64 = 1 << 10;

const CONFIG: &str = r#"
workloads:
- { uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["10.244.1.8"], protocol: HBONE, node: a, services: {} }
- { uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["10.244.2.4"], protocol: HBONE, node: b, services: {} }
policies: []
"#;

fn mesh(env: &[(&str, &str)]) -> Mesh {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    Mesh::start(lab, Path::new(ZRING), CONFIG, &["a", "b"], env).unwrap()
}

/// Runs `program args…` in node a's namespace; panics on failure.
fn on_node_a(m: &Mesh, program: &str, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let program = program.to_owned();
    let out = m
        .lab
        .node("a")
        .run(move || Command::new(&program).args(&args).output())
        .expect("running a command in node a");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod_set(m: &Mesh) -> BTreeSet<Ipv4Addr> {
    let out = m
        .lab
        .node("a")
        .run(|| {
            Command::new("nft")
                .args(["list", "set", "ip", "zring", "ztunnel-pods-ips"])
                .output()
        })
        .expect("nft list set");
    zring::capture::enrolled::parse_elements(&String::from_utf8_lossy(&out.stdout))
}

fn hits(m: &Mesh, rule: &str) -> u64 {
    let counters: Vec<RuleCounter> = m.lab.rule_counters(m.lab.node("a")).unwrap_or_default();
    counters
        .iter()
        .find(|c| c.rule == rule)
        .map_or(0, |c| c.packets)
}

fn metric(m: &Mesh, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.scrape("a").sum(name, labels)
}

/// Exchanges on appb:80 for the rest of the test.
fn serve_appb(m: &Mesh) {
    let listener = m
        .lab
        .pod("appb")
        .run(|| std::net::TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    traffic::spawn_server(listener, None);
}

/// `/healthz/ready` of node a: (status, body).
fn ready(m: &Mesh) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], READINESS_PORT));
    let a = m
        .lab
        .node("a")
        .run(move || http::get(addr, "/healthz/ready"))
        .expect("readiness answers");
    (a.status, a.body)
}

/// appa → appb:80, which must pass through node a's zring: its opened-connections count moves
/// and the `outbound` rule counted packets.
fn captured_exchange(m: &Mesh) {
    let opened = || metric(m, "istio_tcp_connections_opened_total", &[]);
    let before = opened();
    m.must_exchange("appa", (APPB, 80).into(), 4 * KIB, 4 * KIB);
    eventually("node a to count the connection", || {
        let now = opened();
        (now > before)
            .then_some(())
            .ok_or(format!("{before} → {now}"))
    });
    assert!(hits(m, "outbound") > 0, "the outbound rule carried nothing");
}

/// Waits until node a counts one more restore for `reason` and its capture is whole again,
/// with appa back in the set.
fn restored(m: &Mesh, reason: &str, before: f64) {
    eventually(&format!("a restore ({reason})"), || {
        let n = metric(m, "zring_capture_restored_total", &[("reason", reason)]);
        let intact = metric(m, "zring_capture_intact", &[]);
        let set = pod_set(m);
        (n > before && intact == 1.0 && set == BTreeSet::from([APPA]))
            .then_some(())
            .ok_or(format!("restored {n}, intact {intact}, set {set:?}"))
    });
    assert_eq!(ready(m).0, 200, "{}", m.log("a"));
}

#[test]
fn damaged_capture_is_restored() {
    let m = mesh(&[]);
    serve_appb(&m);
    eventually("node a ready", || {
        let (status, body) = ready(&m);
        (status == 200).then_some(()).ok_or(body)
    });
    assert_eq!(metric(&m, "zring_capture_intact", &[]), 1.0);
    captured_exchange(&m);

    // Each kind of damage: what an operator's or a firewall's command does to the node. The
    // watch polls only every 30 s (`POLL_BACKSTOP`) once its notification sockets are open, and
    // `eventually` gives up after 20 s: each repair here is driven by a notification
    // (nf_tables' for the table, rtnetlink's for the rule and the route).
    let cases: [(&str, &[&str], &str); 5] = [
        ("nft", &["flush", "ruleset"], "missing"),
        ("nft", &["delete", "table", "ip", "zring"], "missing"),
        (
            "nft",
            &["flush", "chain", "ip", "zring", "prerouting"],
            "altered",
        ),
        (
            "ip",
            &["rule", "del", "fwmark", "0x111", "lookup", "133"],
            "routing",
        ),
        (
            "ip",
            &[
                "route",
                "del",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                "133",
            ],
            "routing",
        ),
    ];
    for (program, args, reason) in cases {
        let damaged = metric(&m, "zring_capture_damaged_total", &[("reason", reason)]);
        let before = metric(&m, "zring_capture_restored_total", &[("reason", reason)]);
        on_node_a(&m, program, args);
        restored(&m, reason, before);
        assert!(
            metric(&m, "zring_capture_damaged_total", &[("reason", reason)]) > damaged,
            "{program} {args:?} was restored but not counted as damage"
        );
        captured_exchange(&m);
    }
    // Rules inserted into zring's chain are damage too.
    let before = metric(&m, "zring_capture_restored_total", &[("reason", "altered")]);
    on_node_a(
        &m,
        "nft",
        &["insert", "rule", "ip", "zring", "prerouting", "accept"],
    );
    restored(&m, "altered", before);
    captured_exchange(&m);
    assert_eq!(metric(&m, "zring_capture_restore_errors_total", &[]), 0.0);
    let log = m.log("a");
    assert!(log.contains("node capture restored"), "{log}");
}

#[test]
fn missing_capture_makes_the_node_unready() {
    let m = mesh(&[("ZRING_CAPTURE_RESTORE", "false")]);
    serve_appb(&m);
    eventually("node a ready", || {
        let (status, body) = ready(&m);
        (status == 200).then_some(()).ok_or(body)
    });
    captured_exchange(&m);

    on_node_a(&m, "nft", &["delete", "table", "ip", "zring"]);
    eventually("node a unready", || {
        let (status, body) = ready(&m);
        (status == 503 && body.contains("node capture"))
            .then_some(())
            .ok_or(format!("{status} {body}"))
    });
    assert_eq!(metric(&m, "zring_capture_intact", &[]), 0.0);
    assert_eq!(
        metric(&m, "zring_capture_damaged_total", &[("reason", "missing")]),
        1.0
    );
    assert_eq!(
        metric(&m, "zring_capture_restored_total", &[("reason", "missing")]),
        0.0,
        "restoring was turned off"
    );
    // What the watch reports: appa's traffic now bypasses node a's zring (fail-open).
    let opened = metric(&m, "istio_tcp_connections_opened_total", &[]);
    m.must_exchange("appa", (APPB, 80).into(), KIB, KIB);
    assert_eq!(
        metric(&m, "istio_tcp_connections_opened_total", &[]),
        opened,
        "without its table node a still captured appa"
    );
    let (status, _) = ready(&m);
    assert_eq!(status, 503, "ready with capture missing");

    // The operator re-installs the rules (`zring redirect apply`: the set comes back empty).
    m.lab.redirect(m.lab.node("a")).unwrap();
    eventually("node a ready again, its set refilled", || {
        let (status, body) = ready(&m);
        let set = pod_set(&m);
        (status == 200 && set == BTreeSet::from([APPA]))
            .then_some(())
            .ok_or(format!("{status} {body} {set:?}"))
    });
    captured_exchange(&m);
}
