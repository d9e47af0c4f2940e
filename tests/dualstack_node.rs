//! Dual stack end to end in node mode (`PROXY_MODE=node`, `Mesh::start`): the nodes' capture is
//! `table ip zring` and `table ip6 zring` with both families' policy routing, zring listens on
//! `0.0.0.0` and `[::]`, and keeps both families' enrolled-pod sets. On the lab's IPv6
//! variants (`Lab::seed_dual_stack`, `Lab::seed_ipv6_only`: appa `fd00:244:1::8` on node a,
//! appb `fd00:244:2::4` on node b):
//!
//! - dual stack: appa reaches appb by v4 and by v6 over HBONE between the nodes, each seen by
//!   the server with the real client address of its family, by the v4 and the v6 service VIP,
//!   a v6 client with another identity is denied by appb's policy, a v6 connection to a pod
//!   on the same node is connected directly, a v6 connection to an address outside the mesh
//!   passes through, and the v6 capture rules' own counters carried
//!   the v6 traffic;
//! - v6 only: v6 HBONE and the v6 VIP, node b's own v6 connection to appb captured (and denied:
//!   plaintext proves no identity), then the capture watch: `nft flush ruleset` and a
//!   deleted `table ip6 zring` on node a are each put back (both tables, the v6 set refilled)
//!   and appa's v6 traffic is captured again; so is a removed IPv6 policy rule;
//! - DNS: with node-mode DNS capture, a pod asking over IPv6 (UDP and TCP) gets AAAA (and A)
//!   answers for a service from the node's DNS proxy, and another name forwarded to an IPv4
//!   upstream.
//!
//! Runs as root under `cargo test`; without root `Lab::seed` fails the test. Waits are
//! conditions with deadlines, never sleeps. Each lab deletes its namespaces when it drops.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zring::lab::mesh::{READINESS_PORT, eventually};
use zring::lab::{
    Lab, Mesh, SEED_APPA6, SEED_APPB6,
    dns::{self, addresses, query},
    http, traffic,
};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// A second mesh pod on node a, with another identity (appb's policy denies it).
const APPC4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const APPC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 7);
/// A pod on node b outside the mesh: reached by passthrough.
const WEB4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
const WEB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 9);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0x101, 0x203);
/// The cluster DNS address pods ask (IPv6): captured to the node's 15053.
const CLUSTER_DNS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0xa);
const SPIFFE_APPA: &str = "spiffe://cluster.local/ns/default/sa/appa";
const SPIFFE_APPB: &str = "spiffe://cluster.local/ns/default/sa/appb";
const KIB: u64 = 1 << 10;

/// appa (and appc) on node a, appb on node b behind service appb (8000 → 80), all HBONE, with
/// the given addresses and VIPs; appb's namespace allows only appa's identity.
fn config(appa: &[IpAddr], appc: &[IpAddr], appb: &[IpAddr], vips: &[IpAddr]) -> String {
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(|ip| format!("\"{ip}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let vips = vips
        .iter()
        .map(|ip| format!("\"/{ip}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadName: appa, canonicalName: appa, workloadIps: [{appa}], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appc, name: appc, namespace: default, serviceAccount: appc, workloadName: appc, workloadIps: [{appc}], protocol: HBONE, node: a, services: {{}} }}
- uid: appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadName: appb
  workloadIps: [{appb}]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: [{vips}]
  ports:
    8000: 80
  subjectAltNames:
    - {SPIFFE_APPB}
policies:
- name: allow-appa
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules: [[[{{ principals: [!Exact cluster.local/ns/default/sa/appa] }}]]]
"#,
        appa = list(appa),
        appc = list(appc),
        appb = list(appb),
    )
}

/// A server in `pod` on `[::]:port` (dual-stack: takes v4 and v6), for good.
fn serve(m: &Mesh, pod: &str, port: u16) {
    let l = m
        .lab
        .pod(pod)
        .run(move || TcpListener::bind(("::", port)))
        .unwrap();
    traffic::spawn_server(l, None);
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

/// Packets the commented rule of `node`'s IPv6 capture table has matched.
fn hits6(m: &Mesh, node: &str, rule: &str) -> u64 {
    m.lab
        .rule_counters6(m.lab.node(node))
        .unwrap_or_default()
        .iter()
        .find(|c| c.rule == rule)
        .map_or(0, |c| c.packets)
}

/// `nft list set <family> zring ztunnel-pods-ips` in `node`, parsed.
fn pod_set(m: &Mesh, node: &str, family: &'static str) -> BTreeSet<IpAddr> {
    let out = m
        .lab
        .node(node)
        .run(move || {
            Command::new("nft")
                .args(["list", "set", family, "zring", "ztunnel-pods-ips"])
                .output()
        })
        .expect("nft list set");
    zring::capture::enrolled::parse_elements(&String::from_utf8_lossy(&out.stdout))
}

/// Runs `program args…` in node `node`'s namespace; panics on failure.
fn on_node(m: &Mesh, node: &str, program: &str, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let program = program.to_owned();
    let out = m
        .lab
        .node(node)
        .run(move || Command::new(&program).args(&args).output())
        .expect("running a command in a node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/healthz/ready` of `node`: its status.
fn ready(m: &Mesh, node: &str) -> u16 {
    let addr = SocketAddr::from(([127, 0, 0, 1], READINESS_PORT));
    m.lab
        .node(node)
        .run(move || http::get(addr, "/healthz/ready"))
        .expect("readiness answers")
        .status
}

#[test]
fn dual_stack_node_mode_v4_and_v6_over_hbone_vips_policy_and_passthrough() {
    let mut lab = Lab::seed_dual_stack().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appc", APPC4).unwrap();
    lab.add_pod_ipv6("appc", APPC6).unwrap();
    lab.add_pod("b", "web", WEB4).unwrap();
    lab.add_pod_ipv6("web", WEB6).unwrap();
    let cfg = config(
        &[APPA4.into(), SEED_APPA6.into()],
        &[APPC4.into(), APPC6.into()],
        &[APPB4.into(), SEED_APPB6.into()],
        &[VIP4.into(), VIP6.into()],
    );
    let m = Mesh::start(lab, Path::new(ZRING), &cfg, &["a", "b"], &[]).unwrap();
    serve(&m, "appb", 80);
    serve(&m, "web", 80);

    // Both families' sets hold this node's enrolled pods, each its own addresses.
    eventually("node a's sets", || {
        let (v4, v6) = (pod_set(&m, "a", "ip"), pod_set(&m, "a", "ip6"));
        let want4 = BTreeSet::from([IpAddr::from(APPA4), APPC4.into()]);
        let want6 = BTreeSet::from([IpAddr::from(SEED_APPA6), APPC6.into()]);
        (v4 == want4 && v6 == want6)
            .then_some(())
            .ok_or(format!("{v4:?} {v6:?}"))
    });

    // v4 and v6 in the same lab, pod to pod across the nodes over HBONE.
    for (to, client, dst, hbone) in [
        (
            IpAddr::from(APPB4),
            IpAddr::from(APPA4),
            "dst.addr=10.244.2.4:80",
            r#"dst.hbone_addr="10.244.2.4:15008""#,
        ),
        (
            IpAddr::from(SEED_APPB6),
            IpAddr::from(SEED_APPA6),
            "dst.addr=[fd00:244:2::4]:80",
            r#"dst.hbone_addr="[fd00:244:2::4]:15008""#,
        ),
    ] {
        let r = m.must_exchange("appa", (to, 80).into(), 64 * KIB, 128 * KIB);
        assert_eq!((r.uploaded, r.downloaded), (64 * KIB, 128 * KIB));
        // The server's socket is dual-stack: a v4 peer shows as `::ffff:…`.
        assert_eq!(
            r.peer_seen_by_server.ip().to_canonical(),
            client,
            "the real client"
        );
        let line = logged_line(&m, "a", &[dst, hbone, r#"direction="outbound""#]);
        assert!(
            line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
                && line.contains(&format!(r#"dst.identity="{SPIFFE_APPB}""#))
                && line.contains(r#"response_flags="-""#),
            "{line}"
        );
        let line = logged_line(&m, "b", &[r#"direction="inbound""#, dst]);
        assert!(
            line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
                && line.contains(r#"response_flags="-""#),
            "{line}"
        );
    }
    // The v6 client's own address in node a's outbound log.
    logged_line(
        &m,
        "a",
        &["src.addr=[fd00:244:1::8]:", "dst.addr=[fd00:244:2::4]:80"],
    );
    // The IPv6 table carried the v6 hop on each node.
    assert!(hits6(&m, "a", "outbound") > 0, "node a's ip6 outbound rule");
    assert!(
        hits6(&m, "b", "inbound-hbone") > 0,
        "node b's ip6 inbound-hbone rule"
    );

    // Each VIP: HBONE to appb's address of the VIP's family.
    for (vip, vip_text, hbone, client) in [
        (
            IpAddr::from(VIP4),
            "dst.addr=10.96.101.203:8000",
            r#"dst.hbone_addr="10.244.2.4:15008""#,
            IpAddr::from(APPA4),
        ),
        (
            IpAddr::from(VIP6),
            "dst.addr=[fd00:96::101:203]:8000",
            r#"dst.hbone_addr="[fd00:244:2::4]:15008""#,
            IpAddr::from(SEED_APPA6),
        ),
    ] {
        let r = m.must_exchange("appa", (vip, 8000).into(), 16 * KIB, 16 * KIB);
        assert_eq!(r.peer_seen_by_server.ip().to_canonical(), client);
        logged_line(&m, "a", &[vip_text, hbone]);
    }

    // appb's policy: appc's v6 connection is denied at node b, appa's v6 one (above) was not.
    let denied = m.exchange("appc", (SEED_APPB6, 80).into(), KIB, KIB);
    assert!(denied.is_err(), "appc passed: {denied:?}");
    let line = logged_line(
        &m,
        "b",
        &[r#"response_flags="DENY""#, "dst.addr=[fd00:244:2::4]:80"],
    );
    assert!(
        line.contains("sa/appc") && line.contains("fd00:244:1::7"),
        "{line}"
    );

    // Same node over v6: appa → appc, both on node a, connected directly by node a's zring
    // (policy checked there: appa is allowed) from appa's own v6 address.
    serve(&m, "appc", 80);
    let r = m.must_exchange("appa", (APPC6, 80).into(), 8 * KIB, 8 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(SEED_APPA6));
    let line = logged_line(&m, "a", &["dst.addr=[fd00:244:1::7]:80"]);
    assert!(line.contains(r#"response_flags="-""#), "{line}");

    // A v6 passthrough: web is outside the mesh; zring connects straight to it from appa's
    // own v6 address.
    let r = m.must_exchange("appa", (WEB6, 80).into(), 8 * KIB, 8 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(SEED_APPA6));
    m.eventually_logged(
        "a",
        "proxy to [fd00:244:2::9]:80 using TCP type Passthrough",
        1,
    )
    .unwrap();
    logged_line(&m, "a", &["dst.addr=[fd00:244:2::9]:80"]);
}

#[test]
fn v6_only_node_mode_and_the_v6_capture_watched() {
    let lab = Lab::seed_ipv6_only().expect("lab (needs root, ip, nft)");
    let cfg = config(
        &[SEED_APPA6.into()],
        &[APPC6.into()],
        &[SEED_APPB6.into()],
        &[VIP6.into()],
    );
    let m = Mesh::start(lab, Path::new(ZRING), &cfg, &["a", "b"], &[]).unwrap();
    serve(&m, "appb", 80);
    eventually("node a ready", || match ready(&m, "a") {
        200 => Ok(()),
        s => Err(s.to_string()),
    });

    let to = SocketAddr::from((SEED_APPB6, 80));
    let r = m.must_exchange("appa", to, 128 * KIB, 256 * KIB);
    assert_eq!((r.uploaded, r.downloaded), (128 * KIB, 256 * KIB));
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(SEED_APPA6));
    logged_line(
        &m,
        "a",
        &[
            "dst.addr=[fd00:244:2::4]:80",
            r#"dst.hbone_addr="[fd00:244:2::4]:15008""#,
            &format!(r#"src.identity="{SPIFFE_APPA}""#),
        ],
    );
    let r = m.must_exchange("appa", (VIP6, 8000).into(), 16 * KIB, 16 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(SEED_APPA6));
    logged_line(&m, "a", &["dst.addr=[fd00:96::101:203]:8000"]);

    // Node b's own v6 traffic to its enrolled pod is captured too (`host-to-pod`, rerouted
    // through `lo` into the inbound rules): plaintext proves no identity, so appb's policy
    // denies it.
    let from_host = m.lab.node("b").run(move || -> Result<(), String> {
        let s =
            TcpStream::connect_timeout(&to, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        traffic::exchange(s, KIB, KIB, 0xfeed)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    assert!(from_host.is_err(), "node b reached appb around zring");
    assert!(
        hits6(&m, "b", "host-to-pod") > 0,
        "node b's ip6 host-to-pod rule"
    );
    logged_line(
        &m,
        "b",
        &[
            r#"response_flags="DENY""#,
            "dst.addr=[fd00:244:2::4]:80",
            "src.addr=[fd00:244:2::1]:",
        ],
    );

    // The watch: each damage put back with both tables, appa back in the v6 set, and appa's
    // v6 traffic through node a's zring again (its ip6 outbound rule counts it).
    let metric = |name: &str, labels: &[(&str, &str)]| m.scrape("a").sum(name, labels);
    let cases: [&[&str]; 2] = [&["flush", "ruleset"], &["delete", "table", "ip6", "zring"]];
    for args in cases {
        let before = metric("zring_capture_restored_total", &[("reason", "missing")]);
        on_node(&m, "a", "nft", args);
        eventually(
            &format!("node a's capture restored after nft {args:?}"),
            || {
                let n = metric("zring_capture_restored_total", &[("reason", "missing")]);
                let intact = metric("zring_capture_intact", &[]);
                let set6 = pod_set(&m, "a", "ip6");
                let v4 = m.lab.rule_counters(m.lab.node("a")).is_ok();
                let want6 = BTreeSet::from([IpAddr::from(SEED_APPA6), APPC6.into()]);
                (n > before && intact == 1.0 && set6 == want6 && v4)
                    .then_some(())
                    .ok_or(format!(
                        "restored {n}, intact {intact}, v6 set {set6:?}, ip table {v4}"
                    ))
            },
        );
        assert_eq!(ready(&m, "a"), 200, "{}", m.log("a"));
        let hits = hits6(&m, "a", "outbound");
        let opened = metric("istio_tcp_connections_opened_total", &[]);
        m.must_exchange("appa", to, 4 * KIB, 4 * KIB);
        assert!(
            hits6(&m, "a", "outbound") > hits,
            "the restored ip6 outbound rule carried nothing"
        );
        eventually("node a to count the connection", || {
            let now = metric("istio_tcp_connections_opened_total", &[]);
            (now > opened)
                .then_some(())
                .ok_or(format!("{opened} → {now}"))
        });
    }
    // An IPv6 policy route removed: the routing damage, put back.
    let before = metric("zring_capture_restored_total", &[("reason", "routing")]);
    on_node(
        &m,
        "a",
        "ip",
        &["-6", "rule", "del", "fwmark", "0x111", "lookup", "133"],
    );
    eventually("node a's v6 policy route restored", || {
        let n = metric("zring_capture_restored_total", &[("reason", "routing")]);
        (n > before).then_some(()).ok_or(n.to_string())
    });
    m.must_exchange("appa", to, 4 * KIB, 4 * KIB);
    assert_eq!(metric("zring_capture_restore_errors_total", &[]), 0.0);
}

// ---- DNS over IPv6 ----

/// The cluster's DNS service address, as a pod's resolv.conf names it.
const DNS6: SocketAddr = SocketAddr::new(IpAddr::V6(CLUSTER_DNS6), 53);

/// The upstream resolver (IPv4, outside the mesh): answers every query with one A record,
/// [`EXTERNAL`].
fn upstream(m: &Mesh, pod: &str) {
    let udp = m
        .lab
        .pod(pod)
        .run(|| UdpSocket::bind("0.0.0.0:53"))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let q = &buf[..n];
            let mut end = 12;
            while q[end] != 0 {
                end += 1 + q[end] as usize;
            }
            let mut out = q[..end + 5].to_vec();
            out[2] = 0x81;
            out[3] = 0x80;
            out[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            out.extend_from_slice(&EXTERNAL.octets());
            let _ = udp.send_to(&out, from);
        }
    });
}

/// What the upstream resolver answers.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The upstream resolver's pod (node b, outside the mesh).
const RESOLVER4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 53);

#[test]
fn node_mode_dns_answers_a_v6_pod_with_aaaa() {
    let mut lab = Lab::seed_dual_stack().expect("lab (needs root, ip, nft)");
    lab.add_pod("b", "resolver", RESOLVER4).unwrap();
    // In place before zring starts: its capture watch takes the tables it finds as baseline.
    lab.capture_dns();
    let cfg = config(
        &[APPA4.into(), SEED_APPA6.into()],
        &[APPC4.into()],
        &[APPB4.into(), SEED_APPB6.into()],
        &[VIP4.into(), VIP6.into()],
    );
    let upstreams = format!("{RESOLVER4}:53");
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &cfg,
        &["a", "b"],
        &[("ZRING_DNS_UPSTREAMS", &upstreams)],
    )
    .unwrap();
    upstream(&m, "resolver");
    let mut answer = None;
    m.eventually("appa's v6 DNS answered by node a's proxy", || {
        answer = dns::udp_ask_in(m.lab.pod("appa"), DNS6, query(31, "appb", 28));
        answer.is_some()
    })
    .unwrap();
    let (id, rcode, ips) = addresses(&answer.unwrap());
    assert_eq!((id, rcode, ips), (31, 0, vec![IpAddr::from(VIP6)]));
    let (id, rcode, ips) =
        addresses(&dns::udp_ask_in(m.lab.pod("appa"), DNS6, query(32, "appb.default", 1)).unwrap());
    assert_eq!((id, rcode, ips), (32, 0, vec![IpAddr::from(VIP4)]));
    let (id, rcode, ips) = addresses(&dns::tcp_ask_in(
        m.lab.pod("appa"),
        DNS6,
        query(33, "appb.default.svc.cluster.local", 28),
    ));
    assert_eq!((id, rcode, ips), (33, 0, vec![IpAddr::from(VIP6)]));
    assert!(hits6(&m, "a", "dns-udp") > 0 && hits6(&m, "a", "dns-tcp") > 0);
    // A name the mesh does not know: forwarded to the (IPv4) upstream, answered to the v6 pod.
    let (id, rcode, ips) = addresses(
        &dns::udp_ask_in(m.lab.pod("appa"), DNS6, query(34, "external.test", 1)).unwrap(),
    );
    assert_eq!((id, rcode, ips), (34, 0, vec![IpAddr::from(EXTERNAL)]));
    // The v6 client is known: its queries count under its own name.
    m.eventually("node a's istio_dns_* series name appa", || {
        m.scrape("a").sum(
            "istio_dns_requests_total",
            &[("source_canonical_service", "appa")],
        ) >= 3.0
    })
    .unwrap();
}
