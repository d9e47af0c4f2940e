//! Interop with the real ztunnel (the peer binary in `../shared/peers/ztunnel/`), end to end in
//! the seed's two-node lab: zring on one node, ztunnel on the other, then swapped, and
//! checksummed traffic both ways over HBONE (zring outbound → ztunnel inbound, ztunnel outbound
//! → zring inbound), straight to the pod and through its service VIP. Each side must show it
//! was HBONE with the expected identities: zring's access log and metrics
//! (`connection_security_policy="mutual_tls"`, the peer's SPIFFE identity as principal), and
//! ztunnel's access log and its own `/metrics` on 15020 in its node's namespace. Both read one
//! local config and one root (ztunnel's test CA, which its `FAKE_CA` signs with and zring's
//! development CA is given), and a policy checks that zring judges the identity ztunnel presents.
//!
//! Two deployments ([`Mode`]): node mode, ztunnel in dedicated mode as its node's one pod
//! behind the lab's TPROXY rules; and in-pod, both in shared mode, each node's pod enrolled by
//! the lab's fake istio-cni agent with istio-cni's rules in it (Istio's default since 1.21).
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT) and the peer. Ignored by a plain
//! `cargo test`, with a message saying how to run it; `.ci/run` runs it with
//! `--include-ignored`, and then a missing peer fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use zring::lab::mesh::eventually;
use zring::lab::peers::{self, Dedicated, Side};
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const VIP_A: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 202);
const VIP_B: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
/// Each service's port, and the pods' port behind it.
const SVC_PORT: u16 = 8000;
const POD_PORT: u16 = 80;
const MIB: u64 = 1 << 20;
const ID_APPA: &str = "spiffe://cluster.local/ns/default/sa/appa";
const ID_APPB: &str = "spiffe://cluster.local/ns/default/sa/appb";
const OPENED: &str = "istio_tcp_connections_opened_total";

/// Both pods in ztunnel's local-config format (which zring reads too), each behind its own
/// service VIP, then `policies` (a YAML list).
fn config(policies: &str) -> String {
    let pod = |name: &str, ip: Ipv4Addr, node: &str| {
        format!(
            r#"- uid: Kubernetes//Pod/default/{name}
  name: {name}
  namespace: default
  serviceAccount: {name}
  trustDomain: cluster.local
  workloadName: {name}
  canonicalName: {name}
  canonicalRevision: v1
  workloadIps: ["{ip}"]
  protocol: HBONE
  node: {node}
  services:
    "default/{name}.default.svc.cluster.local":
      {SVC_PORT}: {POD_PORT}
"#
        )
    };
    let service = |name: &str, vip: Ipv4Addr| {
        format!(
            r#"- name: {name}
  namespace: default
  hostname: {name}.default.svc.cluster.local
  vips: ["/{vip}"]
  ports:
    {SVC_PORT}: {POD_PORT}
"#
        )
    };
    format!(
        "workloads:\n{}{}services:\n{}{}policies: {policies}\n",
        pod("appa", APPA, "a"),
        pod("appb", APPB, "b"),
        service("appa", VIP_A),
        service("appb", VIP_B),
    )
}

/// Only the two pods' identities may reach anything in `default`: traffic that passes proves
/// each side matched the principal the other presented (an unknown one would be refused).
const ALLOW_BOTH: &str = r#"
- name: allow-appa-appb
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa, !Exact cluster.local/ns/default/sa/appb] }]]]
"#;

/// appa's identity may reach nothing in `default`; appb's is not named.
const DENY_APPA: &str = r#"
- name: deny-appa
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules: [[[{ principals: [!Exact cluster.local/ns/default/sa/appa] }]]]
"#;

/// How zring and ztunnel are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// zring in node mode (node-level TPROXY capture); ztunnel dedicated to the node's one pod
    /// behind the same capture rules.
    Node,
    /// Both in-pod (`PROXY_MODE=shared`), each node's pod handed over by the lab's fake
    /// istio-cni agent with istio-cni's rules installed in it (`Mesh::start_inpod`).
    InPod,
}

/// One pod of the seed's lab, as the tests address it.
#[derive(Debug, Clone, Copy)]
struct Pod {
    name: &'static str,
    node: &'static str,
    ip: Ipv4Addr,
    vip: Ipv4Addr,
    identity: &'static str,
}

const POD_A: Pod = Pod {
    name: "appa",
    node: "a",
    ip: APPA,
    vip: VIP_A,
    identity: ID_APPA,
};
const POD_B: Pod = Pod {
    name: "appb",
    node: "b",
    ip: APPB,
    vip: VIP_B,
    identity: ID_APPB,
};

/// Which node runs which proxy.
#[derive(Debug, Clone, Copy)]
struct Placement {
    zring: Pod,
    ztunnel: Pod,
}

impl Placement {
    /// zring serves `pod`'s node, ztunnel the other one.
    fn zring_on(pod: Pod) -> Placement {
        let other = if pod.node == "a" { POD_B } else { POD_A };
        Placement {
            zring: pod,
            ztunnel: other,
        }
    }

    fn is_zring(&self, node: &str) -> bool {
        self.zring.node == node
    }
}

/// Which roots the two trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    /// One root: ztunnel's test CA, which zring's development CA is given.
    Shared,
    /// zring generates a root of its own; ztunnel keeps the test CA.
    Separate,
}

/// The seed's lab with zring and ztunnel placed as `at` says, `policies` in the shared config.
fn mesh(mode: Mode, at: Placement, policies: &str, roots: Roots) -> Mesh {
    let config = config(policies);
    match mode {
        Mode::Node => {
            let lab = Lab::seed().expect("lab (needs root, ip, nft)");
            let ztunnel = Side::ZtunnelDedicated(Dedicated {
                namespace: "default",
                name: at.ztunnel.name,
                service_account: at.ztunnel.name,
            });
            let sides = [(at.zring.node, Side::Zring), (at.ztunnel.node, ztunnel)];
            let zring = Path::new(ZRING);
            match roots {
                Roots::Shared => peers::mixed_mesh(lab, zring, &config, &sides, &[])
                    .unwrap_or_else(|e| panic!("{e}")),
                Roots::Separate => {
                    let mut m = Mesh::start(lab, zring, &config, &[], &[]).unwrap();
                    peers::start_sides(&mut m, &sides).unwrap_or_else(|e| panic!("{e}"));
                    m
                }
            }
        }
        Mode::InPod => {
            let lab = Lab::seed().expect("lab (needs root, ip, nft)");
            let mut m = Mesh::start_inpod(lab, Path::new(ZRING), &config, &[], &[]).unwrap();
            if roots == Roots::Shared {
                peers::install_ztunnel_test_ca(&m.ca_dir).unwrap_or_else(|e| panic!("{e}"));
            }
            m.start_node(at.zring.node, &[]).unwrap();
            let proxy = peers::ztunnel_inpod().unwrap_or_else(|e| panic!("{e}"));
            // ztunnel's environment must win over the mesh's (zring's), so it is the node's.
            let env = proxy.env.clone();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            m.start_node_with(at.ztunnel.node, proxy, &env)
                .unwrap_or_else(|e| panic!("{e}"));
            m
        }
    }
}

/// The filter of the one metric series both implementations write for a connection from
/// `from` to `to` over HBONE, as `reporter` sees it. The source's workload is known to the
/// inbound side only when the tunnel came from the source pod's address (`source_addressed`);
/// its principal always, from its certificate.
fn mtls_series(
    reporter: &str,
    from: Pod,
    to: Pod,
    source_addressed: bool,
) -> Vec<(&'static str, String)> {
    let mut series = vec![
        ("reporter", reporter.into()),
        ("connection_security_policy", "mutual_tls".into()),
        ("source_principal", from.identity.into()),
        ("destination_workload", to.name.into()),
        ("destination_principal", to.identity.into()),
    ];
    if source_addressed {
        series.push(("source_workload", from.name.into()));
    }
    series
}

/// Waits until the node proxy on `node` has counted exactly `n` connections in `series`
/// (`/metrics` on 15020 in the node's namespace: zring's, or ztunnel's own).
fn eventually_counted(m: &Mesh, node: &str, series: &[(&str, String)], n: f64) {
    let filter: Vec<(&str, &str)> = series.iter().map(|(k, v)| (*k, v.as_str())).collect();
    eventually(
        &format!("{n} connections {filter:?} on node {node}"),
        || {
            let scrape = m.scrape(node);
            let got = scrape.sum(OPENED, &filter);
            match got {
                _ if got == n => Ok(()),
                _ if got > n => panic!(
                    "node {node} counted {got} > {n} for {filter:?}:\n{}\n{}",
                    scrape.text,
                    m.logs()
                ),
                _ => Err(format!("{got}:\n{}\n{}", scrape.text, m.logs())),
            }
        },
    );
}

/// The access-log lines (zring's and ztunnel's share these fields) on `node` of connections
/// that completed from `from` to `to` in `direction`, once there are `n`.
fn access_lines(
    m: &Mesh,
    node: &str,
    direction: &str,
    from: Pod,
    to: Pod,
    n: usize,
) -> Vec<String> {
    let wanted = [
        format!(r#"direction="{direction}""#),
        format!(r#"src.identity="{}""#, from.identity),
        format!(r#"dst.identity="{}""#, to.identity),
    ];
    eventually(&format!("{n} {direction} access lines on {node}"), || {
        let log = m.log(node);
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("complete") && wanted.iter().all(|w| l.contains(w.as_str())))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            Ok(lines)
        } else {
            Err(format!("{} of {n} {wanted:?}\n{}", lines.len(), m.logs()))
        }
    })
}

/// `from` → `to`, straight to the pod and through its VIP: checksummed, 1 MiB each way, the
/// server sees the client's address (see below); then the evidence of both proxies.
fn traffic(m: &Mesh, mode: Mode, at: Placement, from: Pod, to: Pod) {
    m.serve(to.name, POD_PORT, 2).unwrap();
    // zring dials HBONE from the client pod's own address, and the inbound side (either) hands
    // the connection on from the address the tunnel came from. ztunnel, dedicated but running
    // in the node's namespace rather than the pod's, dials from the node's address; in-pod it
    // dials from inside the pod, so from the pod's address too.
    let seen = if at.is_zring(from.node) || mode == Mode::InPod {
        from.ip
    } else {
        m.lab.node(from.node).underlay_ip()
    };
    for dst in [
        SocketAddr::from((to.ip, POD_PORT)),
        SocketAddr::from((to.vip, SVC_PORT)),
    ] {
        let r = m.must_exchange(from.name, dst, MIB, MIB);
        assert_eq!(r.peer_seen_by_server.ip(), seen, "{dst}");
        assert_eq!((r.uploaded, r.downloaded), (MIB, MIB), "{dst}");
    }
    let via = format!("{}:15008", to.ip);
    // The outbound side: who dialled HBONE, to which pod's 15008, for which destination.
    let out = access_lines(m, from.node, "outbound", from, to, 2);
    if at.is_zring(from.node) {
        for dst in [
            format!("{}:{POD_PORT}", to.ip),
            format!("{}:{SVC_PORT}", to.vip),
        ] {
            m.eventually_logged(
                from.node,
                &format!("proxy to {dst} using HBONE via {via} type ToServer"),
                1,
            )
            .unwrap();
        }
        assert!(
            out.iter()
                .all(|l| l.contains(&format!(r#"dst.hbone_addr="{via}""#))
                    && l.contains(r#"response_flags="-""#)),
            "{out:#?}"
        );
    } else {
        // ztunnel logs the HBONE target as dst.addr and the pod's port as dst.hbone_addr.
        assert!(
            out.iter().all(|l| l.contains(&format!("dst.addr={via}"))
                && l.contains(&format!("dst.hbone_addr={}:{POD_PORT}", to.ip))),
            "{out:#?}"
        );
        assert!(
            out.iter().any(|l| l.contains(&format!(
                r#"dst.service="{}.default.svc.cluster.local""#,
                to.name
            ))),
            "no outbound line through the service: {out:#?}"
        );
    }
    // The inbound side: the identity the client proved.
    let inbound = access_lines(m, to.node, "inbound", from, to, 2);
    let addressed = seen == from.ip;
    if at.is_zring(to.node) {
        m.eventually_logged(
            to.node,
            &format!("got CONNECT request to {}:{POD_PORT}", to.ip),
            2,
        )
        .unwrap();
        assert!(
            inbound.iter().all(|l| l.contains(r#"response_flags="-""#)
                && l.contains(&format!("src.addr={seen}:"))
                && (!addressed || l.contains(&format!(r#"src.workload="{}""#, from.name)))),
            "{inbound:#?}"
        );
    }
    // Both count the two connections as mutual TLS with both principals.
    eventually_counted(m, from.node, &mtls_series("source", from, to, true), 2.0);
    let series = mtls_series("destination", from, to, addressed);
    eventually_counted(m, to.node, &series, 2.0);
}

/// Traffic both ways between the two nodes: zring's outbound to ztunnel's inbound and
/// ztunnel's outbound to zring's inbound.
fn both_ways(mode: Mode, at: Placement) {
    let m = mesh(mode, at, ALLOW_BOTH, Roots::Shared);
    traffic(&m, mode, at, at.zring, at.ztunnel);
    traffic(&m, mode, at, at.ztunnel, at.zring);
}

#[test]
#[ignore = "needs the real ztunnel in ../shared/peers/ztunnel/ (or ZRING_PEERS_DIR) and root; CI runs it: cargo test --test ztunnel_interop -- --include-ignored"]
fn node_mode_zring_on_a_ztunnel_on_b() {
    both_ways(Mode::Node, Placement::zring_on(POD_A));
}

#[test]
#[ignore = "needs the real ztunnel in ../shared/peers/ztunnel/ (or ZRING_PEERS_DIR) and root; CI runs it: cargo test --test ztunnel_interop -- --include-ignored"]
fn node_mode_ztunnel_on_a_zring_on_b() {
    both_ways(Mode::Node, Placement::zring_on(POD_B));
}

#[test]
#[ignore = "needs the real ztunnel in ../shared/peers/ztunnel/ (or ZRING_PEERS_DIR) and root; CI runs it: cargo test --test ztunnel_interop -- --include-ignored"]
fn inpod_zring_on_a_ztunnel_on_b() {
    both_ways(Mode::InPod, Placement::zring_on(POD_A));
}

#[test]
#[ignore = "needs the real ztunnel in ../shared/peers/ztunnel/ (or ZRING_PEERS_DIR) and root; CI runs it: cargo test --test ztunnel_interop -- --include-ignored"]
fn inpod_ztunnel_on_a_zring_on_b() {
    both_ways(Mode::InPod, Placement::zring_on(POD_B));
}

/// One policy, read by both, denies appa's identity: zring on node b refuses the HBONE
/// CONNECT that ztunnel makes for appa with 401 (its log and metrics name the identity ztunnel
/// proved, and ztunnel's outbound sees the refusal), while appb's identity, which the policy
/// does not name, passes through ztunnel into appa.
#[test]
#[ignore = "needs the real ztunnel in ../shared/peers/ztunnel/ (or ZRING_PEERS_DIR) and root; CI runs it: cargo test --test ztunnel_interop -- --include-ignored"]
fn node_mode_zring_denies_ztunnel_client_by_identity() {
    let at = Placement::zring_on(POD_B);
    let m = mesh(Mode::Node, at, DENY_APPA, Roots::Shared);
    m.serve("appb", POD_PORT, 1).unwrap();
    let denied = m.exchange("appa", (APPB, POD_PORT).into(), 1024, 1024);
    assert!(denied.is_err(), "appa passed the DENY: {denied:?}");
    m.eventually_logged("b", "unauthorized: deny: policy default/deny-appa", 1)
        .unwrap();
    let line = access_lines(&m, "b", "inbound", POD_A, POD_B, 1).remove(0);
    assert!(line.contains(r#"response_flags="DENY""#), "{line}");
    // ztunnel's outbound saw zring's answer to its CONNECT.
    let out = eventually("ztunnel's refused outbound", || {
        m.log("a")
            .lines()
            .find(|l| {
                l.contains(r#"direction="outbound""#)
                    && l.contains(r#"error="http status: 401 Unauthorized""#)
            })
            .map(str::to_owned)
            .ok_or_else(|| m.logs())
    });
    assert!(
        out.contains(&format!(r#"src.identity="{ID_APPA}""#)),
        "{out}"
    );
    // The same policy lets appb's identity through ztunnel into appa.
    traffic(&m, Mode::Node, at, POD_B, POD_A);
}

/// zring with a root of its own, ztunnel with the test CA: neither accepts the other's
/// certificate, so both directions fail in the TLS handshake and nothing reaches either pod,
/// though the same pair passes traffic when they share the root (the tests above).
#[test]
#[ignore = "needs the real ztunnel in ../shared/peers/ztunnel/ (or ZRING_PEERS_DIR) and root; CI runs it: cargo test --test ztunnel_interop -- --include-ignored"]
fn node_mode_a_foreign_root_fails_the_handshake() {
    let at = Placement::zring_on(POD_A);
    let m = mesh(Mode::Node, at, ALLOW_BOTH, Roots::Separate);
    for (from, to) in [(POD_A, POD_B), (POD_B, POD_A)] {
        m.serve(to.name, POD_PORT, 1).unwrap();
        let r = m.exchange(from.name, (to.ip, POD_PORT).into(), 1024, 1024);
        assert!(
            r.is_err(),
            "{} → {} passed: {r:?}\n{}",
            from.name,
            to.name,
            m.logs()
        );
    }
    let (zring, ztunnel) = (at.zring.node, at.ztunnel.node);
    // zring's outbound refuses ztunnel's certificate; ztunnel's inbound hears the alert.
    m.eventually_logged(zring, "invalid peer certificate: UnknownIssuer", 1)
        .unwrap();
    m.eventually_logged(zring, r#"response_flags="CONNECT""#, 1)
        .unwrap();
    m.eventually_logged(ztunnel, "tls handshake error", 1)
        .unwrap();
    // ztunnel's outbound refuses zring's certificate; zring's inbound hears the alert.
    m.eventually_logged(
        ztunnel,
        r#"direction="outbound" bytes_sent=0 bytes_recv=0"#,
        1,
    )
    .unwrap();
    m.eventually_logged(ztunnel, "invalid peer certificate: UnknownIssuer", 1)
        .unwrap();
    m.eventually_logged(zring, "HBONE TLS handshake failed: received fatal alert", 1)
        .unwrap();
    assert!(
        !m.log(zring).contains("got CONNECT request"),
        "{}",
        m.logs()
    );
    let refused = m.scrape(zring).sum(
        "zring_hbone_connections_refused_total",
        &[("reason", "tls_handshake")],
    );
    assert_eq!(refused, 1.0, "{}", m.logs());
}
