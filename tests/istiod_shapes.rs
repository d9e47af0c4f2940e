//! End to end, in network namespaces: what istiod sends and zring once refused for the whole
//! configuration is kept, and each connection routes or is refused on its own. Real zring
//! processes on nodes a and b (node capture, plain TCP workloads), node c outside the mesh.
//!
//! - a ServiceEntry resolved by DNS (an endpoint with a hostname, no IP): the config applies;
//!   its name does not resolve here (the upstream named has no DNS server), so the connection
//!   is reset with `response_flags="DNS_FAILED"`, the other shapes still work
//!   (`tests/hostname_workload.rs` resolves such names);
//! - two services of two namespaces on one VIP: each client reaches its own namespace's;
//! - a `PASSTHROUGH` service and a CIDR VIP: the original destination, the service named;
//! - one IP on two networks: the client's network decides (the other-network twin is HBONE and
//!   would otherwise outrank the plain TCP pod);
//! - a headless service: its endpoint reached by its own IP;
//! - FAILOVER on region and zone: every connection goes to the same-zone endpoint although a
//!   far one has 1000 times its capacity, and the choice is in the debug log.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::new` fails the test.

use std::net::Ipv4Addr;
use std::path::Path;

use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPO: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
/// Outside the mesh and in no workload: only the CIDR VIP covers it.
const EXT2: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 8);
const MIB: u64 = 1 << 20;

fn config() -> String {
    format!(
        r#"workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["{APPA}"]
  node: a
  locality: {{region: r1, zone: z1, subzone: ""}}
  services: {{}}
- uid: Kubernetes//Pod/other/appo
  name: appo
  namespace: other
  serviceAccount: appo
  workloadIps: ["{APPO}"]
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  node: b
  locality: {{region: r1, zone: z1, subzone: ""}}
  services:
    "default/shared.default.svc.cluster.local": {{}}
    "default/hl.default.svc.cluster.local": {{}}
    "default/near.default.svc.cluster.local": {{}}
- uid: Kubernetes//Pod/default/appb-twin
  name: appb-twin
  namespace: default
  serviceAccount: twin
  workloadIps: ["{APPB}"]
  network: net2
  protocol: HBONE
  node: z
  services: {{}}
- uid: Kubernetes//Pod/default/ext
  name: ext
  namespace: default
  serviceAccount: ext
  workloadIps: ["{EXT}"]
  node: c
  capacity: 1000
  locality: {{region: r2, zone: z9, subzone: ""}}
  services:
    "other/shared.other.svc.cluster.local": {{}}
    "default/near.default.svc.cluster.local": {{}}
- uid: Kubernetes/networking.istio.io/ServiceEntry/default/db/db.example.com
  name: db
  namespace: default
  serviceAccount: default
  workloadIps: []
  hostname: db.example.com
  services:
    "default/db.example.com": {{}}
services:
- name: db
  namespace: default
  hostname: db.example.com
  vips: ["/240.240.0.1"]
  ports: {{5432: 5432}}
- name: shared
  namespace: default
  hostname: shared.default.svc.cluster.local
  vips: ["/10.96.5.5"]
  ports: {{80: 80}}
- name: shared
  namespace: other
  hostname: shared.other.svc.cluster.local
  vips: ["/10.96.5.5"]
  ports: {{80: 9000}}
- name: ext
  namespace: default
  hostname: ext.example.com
  vips: ["/{EXT}"]
  ports: {{9000: 9000}}
  loadBalancer: {{routingPreferences: [], mode: Passthrough, healthPolicy: OnlyHealthy}}
- name: range
  namespace: default
  hostname: range.example.com
  vips: []
  cidrVips: [{{network: "", cidr: "10.244.3.0/24"}}]
  ports: {{9001: 9001}}
  loadBalancer: {{routingPreferences: [], mode: Passthrough, healthPolicy: OnlyHealthy}}
- name: hl
  namespace: default
  hostname: hl.default.svc.cluster.local
  vips: []
  ports: {{80: 80}}
- name: near
  namespace: default
  hostname: near.default.svc.cluster.local
  vips: ["/10.96.6.1"]
  ports: {{80: 80}}
  loadBalancer: {{routingPreferences: [Region, Zone], mode: Failover, healthPolicy: OnlyHealthy}}
"#
    )
}

fn cluster(driver: &str) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    // Plain TCP workloads: none is enrolled, so capture every pod address.
    lab.capture_every_pod_address();
    lab.add_pod("a", "appo", APPO).unwrap();
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    lab.add_pod("c", "ext2", EXT2).unwrap();
    Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[
            ("ZRING_DRIVER", driver),
            ("RUST_LOG", "info,zring::proxy::outbound=debug"),
            // Nothing listens there: hostname endpoints do not resolve.
            ("ZRING_DNS_UPSTREAMS", &format!("{EXT2}:53")),
        ],
    )
    .unwrap()
}

zring::on_both_drivers!(istiod_shapes_route_or_refuse_per_connection);

fn istiod_shapes_route_or_refuse_per_connection(driver: &str) {
    let c = cluster(driver);
    c.serve("appb", 80, 4).unwrap();
    c.serve("ext", 9000, 3).unwrap();
    c.serve("ext2", 9001, 1).unwrap();

    // The hostname endpoint's name does not resolve: this connection only is refused.
    let refused = c.exchange("appa", (Ipv4Addr::new(240, 240, 0, 1), 5432).into(), 1, 1);
    assert!(refused.is_err(), "{refused:?}");
    c.eventually_logged("a", "response_flags=\"DNS_FAILED\"", 1)
        .unwrap();
    c.eventually_logged(
        "a",
        "is addressed by hostname db.example.com, which did not resolve",
        1,
    )
    .unwrap();

    // Two services on one VIP: appa (default) reaches appb:80, appo (other) ext:9000.
    let r = c.must_exchange("appa", (Ipv4Addr::new(10, 96, 5, 5), 80).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    c.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 1)
        .unwrap();
    let r = c.must_exchange("appo", (Ipv4Addr::new(10, 96, 5, 5), 80).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPO);
    c.eventually_logged("a", "proxy to 10.244.3.7:9000 using TCP type Direct", 1)
        .unwrap();

    // PASSTHROUGH, then a CIDR VIP: the original destination, the service in the access log.
    c.must_exchange("appa", (EXT, 9000).into(), MIB, MIB);
    c.eventually_logged(
        "a",
        "proxy to 10.244.3.7:9000 using TCP type Passthrough",
        1,
    )
    .unwrap();
    c.eventually_logged("a", "dst.service=\"ext.example.com\"", 1)
        .unwrap();
    c.must_exchange("appa", (EXT2, 9001).into(), MIB, MIB);
    c.eventually_logged(
        "a",
        "proxy to 10.244.3.8:9001 using TCP type Passthrough",
        1,
    )
    .unwrap();
    c.eventually_logged("a", "dst.service=\"range.example.com\"", 1)
        .unwrap();

    // appb's IP is also appb-twin's on net2 (HBONE): appa, on the default network, reaches
    // appb directly (the headless service's endpoint, by its own IP).
    let r = c.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    c.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 2)
        .unwrap();
    assert!(
        !c.log("a").contains("HBONE via 10.244.2.4"),
        "{}",
        c.log("a")
    );

    // FAILOVER: the same-zone endpoint, though ext has 1000 times appb's capacity.
    c.must_exchange("appa", (Ipv4Addr::new(10, 96, 6, 1), 80).into(), MIB, MIB);
    c.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 3)
        .unwrap();
    c.eventually_logged("a", "endpoint chosen", 1).unwrap();
    let log = c.log("a");
    let line = log
        .lines()
        .find(|l| l.contains("endpoint chosen") && l.contains("near.default.svc.cluster.local"))
        .unwrap_or_else(|| panic!("no choice logged for near:\n{log}"));
    for want in [
        "endpoint=Kubernetes//Pod/default/appb",
        "mode=Failover",
        "matched=2",
        "preferences=2",
        "tier=1",
        "eligible=2",
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }
}
