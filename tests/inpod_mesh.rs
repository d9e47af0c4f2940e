//! In-pod mode carries the whole data path: zring in-pod (`PROXY_MODE=shared`) on both lab
//! nodes, each node's pods enrolled by the lab's fake istio-cni agent with istio-cni's rules in
//! each pod (`Mesh::start_inpod`).
//!
//! Checked: appa → appb over HBONE directly and through the service VIP, checksummed, the pod
//! seeing the real client, with both nodes' access logs and `istio_tcp_*` metrics showing
//! mutual TLS and both identities; same-node pod to pod (through the destination pod's own
//! 15008, so its policies apply with the source's proven identity); passthrough to an address
//! outside the mesh; an authorization DENY enforced inside the destination pod; and a pod
//! deleted under an open connection: the connection ends within the drain deadline, recorded
//! `POD_REMOVED` (not as a clean completion), and zring's
//! descriptors drop below the baseline (the pod's listeners, netns and pooled HBONE
//! connections all gone).
//!
//! Beside kube-proxy (both its iptables and nftables modes, on both nodes): appa's connection
//! to the service VIP is taken in appa's own netns before the node's DNAT could see it, so it
//! reaches zring as the VIP (the access log and metrics name the service) and goes over HBONE
//! to appb, and kube-proxy's DNAT counts nothing for it; a pod outside the mesh gets the DNAT,
//! which proves the rules live.
//!
//! Runs as root under `cargo test`. Waits are conditions with deadlines, never sleeps.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use zring::lab::kubeproxy::{Mode, Service};
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPA2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// On node b, outside the mesh: not in the config, never enrolled.
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
/// On node a, outside the mesh (added by the kube-proxy tests only).
const PLAIN: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const SPIFFE_APPA: &str = "spiffe://cluster.local/ns/default/sa/appa";
const SPIFFE_APPB: &str = "spiffe://cluster.local/ns/default/sa/appb";
const KIB: u64 = 1 << 10;

/// The seed's mesh (both pods HBONE, appb behind a service), plus appa2 beside appa, and
/// `policies` (YAML list).
fn config(policies: &str) -> String {
    format!(
        r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadName: appa
  canonicalName: appa
  canonicalRevision: v1
  workloadIps: ["{APPA}"]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appa2
  name: appa2
  namespace: default
  serviceAccount: appa2
  workloadIps: ["{APPA2}"]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadName: appb
  canonicalName: appb
  canonicalRevision: v2
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
  subjectAltNames:
    - {SPIFFE_APPB}
policies: {policies}
"#
    )
}

fn mesh(policies: &str) -> Mesh {
    mesh_with(policies, |_| {})
}

/// [`mesh`], with `more` adding to the lab first.
fn mesh_with(policies: &str, more: impl FnOnce(&mut Lab)) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    lab.add_pod("b", "appc", APPC).unwrap();
    more(&mut lab);
    Mesh::start_inpod(
        lab,
        Path::new(ZRING),
        &config(policies),
        &["a", "b"],
        &[("ZRING_DRAIN_DEADLINE", "1s")],
    )
    .unwrap()
}

fn open_fds(m: &Mesh, node: &str) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", m.zring(node).pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The access-log line on `node` with all of `needles`, once it is there.
fn logged_line(m: &Mesh, node: &str, needles: &[&str]) -> String {
    let mut found = None;
    m.eventually(&format!("an access log on {node} with {needles:?}"), || {
        found = m
            .log(node)
            .lines()
            .find(|l| l.contains("complete dur=") && needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned);
        found.is_some()
    })
    .unwrap();
    found.unwrap()
}

#[test]
fn hbone_between_inpod_nodes_directly_and_through_the_vip() {
    let m = mesh("[]");
    m.serve("appb", 80, 2).unwrap();
    let r = m.must_exchange("appa", (APPB, 80).into(), 256 * KIB, 512 * KIB);
    assert_eq!((r.uploaded, r.downloaded), (256 * KIB, 512 * KIB));
    assert_eq!(
        r.peer_seen_by_server.ip(),
        IpAddr::from(APPA),
        "the real client"
    );
    let r = m.must_exchange("appa", (VIP, 8000).into(), 64 * KIB, 128 * KIB);
    assert_eq!((r.uploaded, r.downloaded), (64 * KIB, 128 * KIB));

    for (dst, service) in [
        ("dst.addr=10.244.2.4:80", false),
        ("dst.addr=10.96.101.203:8000", true),
    ] {
        let line = logged_line(
            &m,
            "a",
            &[
                dst,
                r#"dst.hbone_addr="10.244.2.4:15008""#,
                r#"direction="outbound""#,
            ],
        );
        assert!(
            line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
                && line.contains(&format!(r#"dst.identity="{SPIFFE_APPB}""#))
                && line.contains(r#"src.workload="appa""#)
                && line.contains(r#"dst.workload="appb""#)
                && line.contains(r#"response_flags="-""#)
                && (!service || line.contains("appb.default.svc.cluster.local")),
            "{line}"
        );
    }
    let line = logged_line(
        &m,
        "b",
        &[r#"direction="inbound""#, "dst.addr=10.244.2.4:80"],
    );
    assert!(
        line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
            && line.contains(&format!(r#"dst.identity="{SPIFFE_APPB}""#))
            && line.contains(r#"src.workload="appa""#)
            && line.contains(r#"response_flags="-""#),
        "{line}"
    );

    // Metrics, as in node mode: both connections, mutual TLS, both principals, on each side.
    for (node, reporter) in [("a", "source"), ("b", "destination")] {
        let filter = [
            ("reporter", reporter),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", SPIFFE_APPA),
            ("destination_principal", SPIFFE_APPB),
            ("response_flags", "-"),
        ];
        m.eventually(&format!("node {node} counted both connections"), || {
            let s = m.scrape(node);
            s.sum("istio_tcp_connections_opened_total", &filter) >= 2.0
                && s.sum("istio_tcp_connections_closed_total", &filter) >= 2.0
                && s.sum("istio_tcp_received_bytes_total", &filter) >= (320 * KIB) as f64
        })
        .unwrap();
    }
}

#[test]
fn same_node_passthrough_and_deny_in_pod() {
    // appa2 may not reach anything in the namespace; appa may.
    let deny = r#"
- name: deny-appa2
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa2] }]]]
"#;
    let m = mesh(deny);
    m.serve("appa2", 80, 1).unwrap();
    m.serve("appb", 80, 1).unwrap();
    m.serve("appc", 80, 1).unwrap();

    // Same node: through appa2's own 15008, so appa's identity reaches appa2's policies.
    let r = m.must_exchange("appa", (APPA2, 80).into(), 64 * KIB, 64 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(APPA));
    let line = logged_line(
        &m,
        "a",
        &[r#"direction="inbound""#, "dst.addr=10.244.1.9:80"],
    );
    assert!(
        line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
            && line.contains(r#"dst.workload="appa2""#),
        "{line}"
    );

    // Passthrough: appc is outside the mesh; it sees appa's own IP.
    let r = m.must_exchange("appa", (APPC, 80).into(), 16 * KIB, 16 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(APPA));
    logged_line(
        &m,
        "a",
        &["dst.addr=10.244.2.9:80", r#"response_flags="-""#],
    );

    // DENY, enforced by zring inside appb for appa2's proven identity.
    let r = m.exchange("appa2", (APPB, 80).into(), 1024, 1024);
    assert!(r.is_err(), "appa2 passed its DENY: {r:?}");
    let line = logged_line(&m, "b", &["deny-appa2"]);
    assert!(
        line.contains(r#"response_flags="DENY""#)
            && line.contains(r#"src.identity="spiffe://cluster.local/ns/default/sa/appa2""#),
        "{line}"
    );
    // appa is still let through.
    m.must_exchange("appa", (APPB, 80).into(), 1024, 1024);
}

#[test]
fn pod_deleted_under_an_open_connection() {
    let mut m = mesh("[]");
    m.echo("appb", 80).unwrap();
    let baseline = open_fds(&m, "a");
    let mut conn = m
        .lab
        .pod("appa")
        .run(|| TcpStream::connect_timeout(&SocketAddr::from((APPB, 80)), Duration::from_secs(10)))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    let (uid, _) = m.enrollment("appa").expect("appa is in the config");
    let deleted = Instant::now();
    m.agent("a").del(&uid).unwrap().unwrap();
    // Listeners are closed by the ack; the open connection is cut at the drain deadline (1 s).
    let mut rest = Vec::new();
    let ended = conn.read_to_end(&mut rest);
    let took = deleted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the connection outlived the drain deadline: {took:?} ({ended:?})\n{}",
        m.logs()
    );
    m.eventually_logged("a", "removed pod: closing connections still open", 1)
        .unwrap();
    // Recorded as cut by the pod's removal, not as a clean completion.
    let line = logged_line(
        &m,
        "a",
        &[
            &format!("dst.addr={APPB}:80"),
            r#"response_flags="POD_REMOVED""#,
            "pod removed, connection still open at the drain deadline",
        ],
    );
    assert!(line.contains(r#"src.workload="appa""#), "{line}");
    let cut = m.scrape("a").sum(
        "istio_tcp_connections_closed_total",
        &[("response_flags", "POD_REMOVED")],
    );
    assert_eq!(cut, 1.0, "{}", m.logs());
    // Six listeners, the netns and the pooled HBONE connection went with the pod.
    m.eventually("descriptors below the baseline", || {
        open_fds(&m, "a") + 6 <= baseline
    })
    .unwrap();
    // appa2 on the same node still works.
    m.serve("appb", 81, 1).unwrap();
    m.must_exchange("appa2", (APPB, 81).into(), 1024, 1024);
}

/// In-pod capture runs before kube-proxy: appa's pod REDIRECTs its connection to the VIP to
/// zring inside the pod, which routes the VIP itself (service, endpoint, HBONE) and dials appb's
/// pod IP, so kube-proxy's DNAT never matches. A pod outside the mesh still gets the DNAT.
fn vip_through_kube_proxy(mode: Mode) {
    let m = mesh_with("[]", |lab| {
        lab.add_pod("a", "plain", PLAIN).unwrap();
    });
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
    assert_eq!((r.uploaded, r.downloaded), (64 * KIB, 64 * KIB));
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(APPA));
    let line = logged_line(
        &m,
        "a",
        &[
            "dst.addr=10.96.101.203:8000",
            r#"dst.hbone_addr="10.244.2.4:15008""#,
            r#"direction="outbound""#,
        ],
    );
    assert!(
        line.contains("appb.default.svc.cluster.local")
            && line.contains(r#"dst.workload="appb""#)
            && line.contains(r#"response_flags="-""#),
        "{line}"
    );
    m.eventually_logged("b", "got CONNECT request to 10.244.2.4:80", 1)
        .unwrap();
    for node in ["a", "b"] {
        assert_eq!(
            m.lab
                .kube_proxy_dnat_packets(m.lab.node(node), mode)
                .unwrap(),
            0,
            "kube-proxy on node {node} rewrote a connection in-pod capture took"
        );
    }
    let service = [
        ("reporter", "source"),
        ("destination_service", "appb.default.svc.cluster.local"),
        ("connection_security_policy", "mutual_tls"),
    ];
    m.eventually("node a's metrics to name the service", || {
        m.scrape("a")
            .sum("istio_tcp_connections_opened_total", &service)
            >= 1.0
    })
    .unwrap();

    // `plain` is not enrolled: kube-proxy's DNAT takes it to appb, whose own netns captures it
    // (inbound plaintext).
    let r = m.must_exchange("plain", (VIP, 8000).into(), KIB, KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(PLAIN));
    assert!(
        m.lab
            .kube_proxy_dnat_packets(m.lab.node("a"), mode)
            .unwrap()
            > 0
    );
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
