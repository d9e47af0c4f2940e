//! End to end, in network namespaces, with real zring processes in node mode: capture takes only
//! the enrolled pods zring puts in `ztunnel-pods-ips`, captures the node's own traffic to them,
//! and works beside kube-proxy's service NAT in both of its modes.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::new` fails the test.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use zring::lab::kubeproxy::{Mode, Service};
use zring::lab::mesh::eventually;
use zring::lab::{Lab, Mesh, RuleCounter, traffic};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const PLAIN: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 21);
const NATIVE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 22);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const OUTSIDER_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 21);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const KIB: u64 = 1 << 10;

/// appa (enrolled) and, not enrolled, `plain` (protocol TCP), `native` (HBONE terminated by
/// the pod itself, like a waypoint) on node a; appb (enrolled) on node b, behind service appb
/// (VIP:8000 → 80). `outsider` and `outsider-b` are pods zring does not know at all.
fn config(policies: &str) -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: plain, name: plain, namespace: default, serviceAccount: plain, workloadIps: ["{PLAIN}"], protocol: TCP, node: a, services: {{}} }}
- {{ uid: native, name: native, namespace: default, serviceAccount: native, workloadIps: ["{NATIVE}"], protocol: HBONE, nativeTunnel: true, node: a, services: {{}} }}
- uid: appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/{VIP}"]
  ports:
    8000: 80
policies: {policies}
"#
    )
}

fn mesh(policies: &str) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "plain", PLAIN).unwrap();
    lab.add_pod("a", "outsider", OUTSIDER).unwrap();
    lab.add_pod("a", "native", NATIVE).unwrap();
    lab.add_pod("b", "outsider-b", OUTSIDER_B).unwrap();
    Mesh::start(lab, Path::new(ZRING), &config(policies), &["a", "b"], &[]).unwrap()
}

/// The elements of `node`'s enrolled-pod set, as the kernel holds them.
fn pod_set(m: &Mesh, node: &str) -> BTreeSet<Ipv4Addr> {
    let out = m
        .lab
        .node(node)
        .run(|| {
            std::process::Command::new("nft")
                .args(["list", "set", "ip", "zring", "ztunnel-pods-ips"])
                .output()
        })
        .expect("nft list set");
    zring::capture::enrolled::parse_elements(&String::from_utf8_lossy(&out.stdout))
}

fn counters(m: &Mesh, node: &str) -> Vec<RuleCounter> {
    m.lab.rule_counters(m.lab.node(node)).unwrap()
}

fn hits(counters: &[RuleCounter], rule: &str) -> u64 {
    counters
        .iter()
        .find(|c| c.rule == rule)
        .map_or(0, |c| c.packets)
}

fn opened(m: &Mesh, node: &str) -> f64 {
    m.scrape(node)
        .sum("istio_tcp_connections_opened_total", &[])
}

/// zring fills the set with its node's enrolled pods only; pods outside it talk to each other
/// as if there were no mesh: no capture rule and no zring counter moves, on either node.
#[test]
fn only_enrolled_pods_are_captured() {
    let m = mesh("[]");
    assert_eq!(pod_set(&m, "a"), BTreeSet::from([APPA]), "{}", m.logs());
    assert_eq!(pod_set(&m, "b"), BTreeSet::from([APPB]), "{}", m.logs());
    let updates = m
        .scrape("a")
        .sum("zring_capture_set_updates_total", &[("result", "ok")]);
    assert!(updates >= 1.0, "the first fill is counted");

    let before = [counters(&m, "a"), counters(&m, "b")];
    let opened_before = [opened(&m, "a"), opened(&m, "b")];
    m.serve("outsider", 80, 2).unwrap();
    m.serve("outsider-b", 80, 1).unwrap();
    m.serve("native", 80, 1).unwrap();
    for (from, to) in [
        ("plain", OUTSIDER),   // same node, neither enrolled
        ("plain", OUTSIDER_B), // across nodes
        ("native", OUTSIDER),  // a pod that terminates HBONE itself
        ("outsider", NATIVE),  // and back into it
    ] {
        let r = m.must_exchange(from, (to, 80).into(), 4 * KIB, 4 * KIB);
        let ip = m.lab.pod(from).ip();
        assert_eq!(r.peer_seen_by_server.ip(), ip, "{from} → {to}");
    }
    assert_eq!(
        [counters(&m, "a"), counters(&m, "b")],
        before,
        "capture rules moved for pods outside the set"
    );
    assert_eq!([opened(&m, "a"), opened(&m, "b")], opened_before);
    for node in ["a", "b"] {
        assert!(!m.log(node).contains("complete dur="), "{}", m.logs());
    }

    // Enrolling a pod (a config change) puts it in the set; leaving takes it out again.
    let enrolled = config("[]").replace(
        &format!(r#"workloadIps: ["{PLAIN}"], protocol: TCP"#),
        &format!(r#"workloadIps: ["{PLAIN}"], protocol: HBONE"#),
    );
    std::fs::write(&m.config, enrolled).unwrap();
    eventually("plain in node a's set", || {
        let set = pod_set(&m, "a");
        (set == BTreeSet::from([APPA, PLAIN]))
            .then_some(())
            .ok_or(format!("{set:?}"))
    });
    std::fs::write(&m.config, config("[]")).unwrap();
    eventually("plain out of node a's set", || {
        let set = pod_set(&m, "a");
        (set == BTreeSet::from([APPA]))
            .then_some(())
            .ok_or(format!("{set:?}"))
    });
}

/// A process in node a's own namespace (a hostNetwork pod) reaching appa next door goes
/// through zring's inbound plaintext path, and so through appa's policies: allowed, then
/// denied by a DENY policy on the node's address.
#[test]
fn host_traffic_to_enrolled_pods_is_captured() {
    let m = mesh("[]");
    let listener = m
        .lab
        .pod("appa")
        .run(|| TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    traffic::spawn_server(listener, None);
    let to = SocketAddr::from((APPA, 80));
    let from_node = |m: &Mesh| {
        m.lab.node("a").run(move || {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
                .map_err(|e| format!("connect {to}: {e}"))?;
            traffic::exchange(s, 4 * KIB, 4 * KIB, 7).map_err(|e| e.to_string())
        })
    };
    let r = from_node(&m).unwrap_or_else(|e| panic!("{e}\n{}", m.logs()));
    // The node reaches its pods from the gateway address on their veth.
    let gateway = m.lab.node("a").gateway();
    assert_eq!(r.peer_seen_by_server.ip(), gateway);
    m.eventually_logged("a", r#"direction="inbound""#, 1)
        .unwrap();
    let c = counters(&m, "a");
    assert!(hits(&c, "host-to-pod") > 0, "{c:#?}");
    assert!(hits(&c, "inbound-plaintext") > 0, "{c:#?}");

    let deny = format!(
        r#"
- name: deny-node
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules: [[[{{ sourceIps: ["{gateway}/32"] }}]]]
"#
    );
    std::fs::write(&m.config, config(&deny)).unwrap();
    m.eventually_logged("a", "policies=1", 1).unwrap();
    let denied = from_node(&m);
    assert!(denied.is_err(), "the node got through a DENY: {denied:?}");
    m.eventually_logged("a", "unauthorized: deny: policy default/deny-node", 1)
        .unwrap();
    let log = m.log("a");
    let line = log
        .lines()
        .rfind(|l| l.contains("complete dur=") && l.contains(&gateway.to_string()))
        .unwrap_or_else(|| panic!("no access line for the node:\n{log}"));
    assert!(line.contains(r#"response_flags="DENY""#), "{line}");
}

/// appa → the service VIP with kube-proxy's rules on both nodes: zring on node a gets the
/// connection with the VIP as its destination (kube-proxy's DNAT never touches it), picks appb
/// and tunnels over HBONE; the metrics name the service. A pod outside the mesh still gets
/// kube-proxy's NAT, which proves the rules are live.
fn vip_through_kube_proxy(mode: Mode) {
    let m = mesh("[]");
    let services = [Service {
        namespace: "default".into(),
        name: "appb".into(),
        vip: VIP,
        port: 8000,
        endpoints: vec![std::net::SocketAddrV4::new(APPB, 80)],
    }];
    for node in ["a", "b"] {
        m.lab.kube_proxy(m.lab.node(node), mode, &services).unwrap();
    }
    m.serve("appb", 80, 2).unwrap();
    let r = m.must_exchange("appa", (VIP, 8000).into(), 64 * KIB, 64 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged(
        "a",
        "proxy to 10.96.101.203:8000 using HBONE via 10.244.2.4:15008 type ToServer",
        1,
    )
    .unwrap();
    m.eventually_logged("b", "got CONNECT request to 10.244.2.4:80", 1)
        .unwrap();
    let node_a = m.lab.node("a");
    assert_eq!(
        m.lab.kube_proxy_dnat_packets(node_a, mode).unwrap(),
        0,
        "kube-proxy rewrote a captured connection"
    );
    assert!(hits(&counters(&m, "a"), "keep-destination") > 0);
    let service = [
        ("reporter", "source"),
        ("destination_service", "appb.default.svc.cluster.local"),
    ];
    eventually("node a's metrics to name the service", || {
        let n = m
            .scrape("a")
            .sum("istio_tcp_connections_opened_total", &service);
        (n >= 1.0).then_some(()).ok_or(format!("{n}"))
    });

    // `plain` is not enrolled: kube-proxy's DNAT takes it to appb, whose node captures it.
    let r = m.must_exchange("plain", (VIP, 8000).into(), KIB, KIB);
    assert_eq!(r.peer_seen_by_server.ip(), PLAIN);
    assert!(m.lab.kube_proxy_dnat_packets(node_a, mode).unwrap() > 0);
    m.eventually_logged("b", "10.244.1.20", 1).unwrap();
}

#[test]
fn vip_through_kube_proxy_iptables_mode() {
    vip_through_kube_proxy(Mode::Iptables);
}

#[test]
fn vip_through_kube_proxy_nftables_mode() {
    vip_through_kube_proxy(Mode::Nftables);
}
