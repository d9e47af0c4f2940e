//! Dual stack end to end, in-pod mode (`Mesh::start_inpod`, the lab's fake istio-cni
//! installing both its `ip` and `ip6` tables in each pod), on the lab's IPv6 variants
//! (`Lab::enable_ipv6`, ULA addresses derived from the IPv4 plan):
//!
//! - v6-only: appa and appb have IPv6 only (their IPv4 taken away); a v6 client reaches a v6
//!   server through zring over HBONE (`[fd00:244:2::4]:15008`), checksummed, the server seeing
//!   the real client's v6 address, the access logs naming both identities;
//! - dual-stack: both pods have both families, appb's service has one VIP of each; appa reaches
//!   it by the v4 VIP and by the v6 VIP, each over HBONE to appb's address of the client's
//!   family, and directly by either of appb's addresses.
//!
//! Runs as root under `cargo test`. Waits are conditions with deadlines, never sleeps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;

use zring::lab::{Lab, Mesh, traffic};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const APPA6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 8);
const APPB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 4);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0x101, 0x203);
const SPIFFE_APPA: &str = "spiffe://cluster.local/ns/default/sa/appa";
const SPIFFE_APPB: &str = "spiffe://cluster.local/ns/default/sa/appb";
const KIB: u64 = 1 << 10;

/// appa on node a, appb on node b behind service appb (port 8000 → 80), both HBONE, with
/// the given addresses and VIPs (YAML lists' items).
fn config(appa: &[IpAddr], appb: &[IpAddr], vips: &[IpAddr]) -> String {
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
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadName: appa
  workloadIps: [{appa}]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
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
policies: []
"#,
        appa = list(appa),
        appb = list(appb),
    )
}

/// The seed lab with IPv6 on: appa fd00:244:1::8, appb fd00:244:2::4; `v6_only` takes their
/// IPv4 away.
fn lab(v6_only: bool) -> Lab {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.enable_ipv6().unwrap();
    lab.add_pod_ipv6("appa", APPA6).unwrap();
    lab.add_pod_ipv6("appb", APPB6).unwrap();
    if v6_only {
        lab.remove_pod_ipv4("appa").unwrap();
        lab.remove_pod_ipv4("appb").unwrap();
    }
    lab
}

/// A server in `pod` on `[::]:port` (dual-stack: takes v4 and v6) for `conns` connections.
fn serve(m: &Mesh, pod: &str, port: u16, conns: usize) {
    let l = m
        .lab
        .pod(pod)
        .run(move || TcpListener::bind(("::", port)))
        .unwrap();
    traffic::spawn_server(l, Some(conns));
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
fn v6_only_client_reaches_v6_server_over_hbone_in_pod() {
    let lab = lab(true);
    let cfg = config(&[APPA6.into()], &[APPB6.into()], &[VIP6.into()]);
    let m = Mesh::start_inpod(lab, Path::new(ZRING), &cfg, &["a", "b"], &[]).unwrap();
    serve(&m, "appb", 80, 2);

    let to = SocketAddr::from((APPB6, 80));
    let r = m.must_exchange("appa", to, 128 * KIB, 256 * KIB);
    assert_eq!((r.uploaded, r.downloaded), (128 * KIB, 256 * KIB));
    assert_eq!(
        r.peer_seen_by_server.ip(),
        IpAddr::from(APPA6),
        "the real v6 client"
    );
    let line = logged_line(
        &m,
        "a",
        &[
            "dst.addr=[fd00:244:2::4]:80",
            r#"dst.hbone_addr="[fd00:244:2::4]:15008""#,
            r#"direction="outbound""#,
        ],
    );
    assert!(
        line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
            && line.contains(&format!(r#"dst.identity="{SPIFFE_APPB}""#))
            && line.contains(r#"response_flags="-""#),
        "{line}"
    );
    let line = logged_line(
        &m,
        "b",
        &[r#"direction="inbound""#, "dst.addr=[fd00:244:2::4]:80"],
    );
    assert!(
        line.contains(&format!(r#"src.identity="{SPIFFE_APPA}""#))
            && line.contains(r#"response_flags="-""#),
        "{line}"
    );

    // The v6 VIP too: the service's only endpoint address is v6.
    let r = m.must_exchange("appa", (VIP6, 8000).into(), 16 * KIB, 16 * KIB);
    assert_eq!((r.uploaded, r.downloaded), (16 * KIB, 16 * KIB));
    logged_line(
        &m,
        "a",
        &[
            "dst.addr=[fd00:96::101:203]:8000",
            r#"dst.hbone_addr="[fd00:244:2::4]:15008""#,
        ],
    );
}

#[test]
fn dual_stack_pod_reaches_a_service_by_v4_and_by_v6() {
    let lab = lab(false);
    let cfg = config(
        &[APPA4.into(), APPA6.into()],
        &[APPB4.into(), APPB6.into()],
        &[VIP4.into(), VIP6.into()],
    );
    let m = Mesh::start_inpod(lab, Path::new(ZRING), &cfg, &["a", "b"], &[]).unwrap();
    serve(&m, "appb", 80, 4);

    // By each VIP: HBONE to appb's address of the client's (the VIP's) family.
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
            IpAddr::from(APPA6),
        ),
    ] {
        let r = m.must_exchange("appa", (vip, 8000).into(), 64 * KIB, 32 * KIB);
        assert_eq!((r.uploaded, r.downloaded), (64 * KIB, 32 * KIB));
        // The server's `[::]` socket shows a v4 client v4-mapped.
        assert_eq!(
            r.peer_seen_by_server.ip().to_canonical(),
            client,
            "via {vip}"
        );
        let line = logged_line(&m, "a", &[vip_text, hbone, r#"direction="outbound""#]);
        assert!(
            line.contains("appb.default.svc.cluster.local")
                && line.contains(&format!(r#"dst.identity="{SPIFFE_APPB}""#))
                && line.contains(r#"response_flags="-""#),
            "{line}"
        );
    }

    // Directly, by either of appb's addresses.
    for to in [IpAddr::from(APPB4), IpAddr::from(APPB6)] {
        let r = m.must_exchange("appa", (to, 80).into(), 8 * KIB, 8 * KIB);
        assert_eq!((r.uploaded, r.downloaded), (8 * KIB, 8 * KIB));
    }
}
