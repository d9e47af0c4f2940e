//! In-pod DNS over IPv6 (`Mesh::start_inpod` on `Lab::seed_dual_stack`): the lab's fake
//! istio-cni REDIRECTs a pod's DNS in both families, and an IPv6 query lands on `::1:15053`;
//! zring's DNS proxy listens there beside `127.0.0.1:15053` (ztunnel binds its default
//! `localhost:15053` as both loopbacks), so a pod whose nameserver is IPv6 (IPv6-first dual
//! stack, IPv6-only clusters) gets the mesh's answers over UDP and TCP. Needs root; waits are
//! conditions with deadlines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use zring::lab::cni::{self, InpodRules};
use zring::lab::{
    Lab, Mesh, SEED_APPA6, SEED_APPB6,
    dns::{self, addresses, query},
};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0x101, 0x203);
/// The cluster DNS address the pod asks (IPv6).
const CLUSTER_DNS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0xa);

fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, canonicalName: appa, workloadIps: ["{APPA4}", "{SEED_APPA6}"], protocol: HBONE, node: a, services: {{}} }}
- uid: appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB4}", "{SEED_APPB6}"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/{VIP4}", "/{VIP6}"]
  ports:
    8000: 80
policies: []
"#
    )
}

/// The cluster's DNS service address, as a pod's resolv.conf names it.
const DNS6: SocketAddr = SocketAddr::new(IpAddr::V6(CLUSTER_DNS6), 53);

#[test]
fn inpod_dns_answers_a_pod_asking_over_ipv6() {
    let lab = Lab::seed_dual_stack().expect("lab (needs root, ip, nft)");
    let m = Mesh::start_inpod(lab, Path::new(ZRING), &config(), &["a", "b"], &[]).unwrap();
    // istio-cni's rules with DNS capture, as the chart installs them by default.
    cni::install_rules(m.lab.pod("appa").netns(), InpodRules { dns: true }).unwrap();
    let mut answer = None;
    m.eventually("appa's IPv6 DNS answered by its in-pod proxy", || {
        answer = dns::udp_ask_in(m.lab.pod("appa"), DNS6, query(51, "appb", 28));
        answer.is_some()
    })
    .unwrap();
    assert_eq!(
        addresses(&answer.unwrap()),
        (51, 0, vec![IpAddr::from(VIP6)])
    );
    let a = dns::udp_ask_in(m.lab.pod("appa"), DNS6, query(52, "appb.default", 1)).unwrap();
    assert_eq!(addresses(&a), (52, 0, vec![IpAddr::from(VIP4)]));
    let a = dns::tcp_ask_in(
        m.lab.pod("appa"),
        DNS6,
        query(53, "appb.default.svc.cluster.local", 28),
    );
    assert_eq!(addresses(&a), (53, 0, vec![IpAddr::from(VIP6)]));
    m.eventually("appa's queries counted", || {
        m.scrape("a").sum(
            "istio_dns_requests_total",
            &[("source_canonical_service", "appa")],
        ) >= 3.0
    })
    .unwrap();
}
