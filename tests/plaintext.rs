//! End to end, in network namespaces: the plaintext data path through real zring processes on
//! two (or three) nodes with nftables TPROXY capture. Every test runs on both drivers.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::new` fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use zring::lab::traffic::{self, Report};
use zring::lab::{Lab, Mesh};
use zring::sys::socket::SpoofSide;

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPA2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 66);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const MIB: u64 = 1 << 20;

/// Workloads speak plain TCP here; HBONE has its own tests.
fn config(with_appa: bool) -> String {
    let appa = format!(
        r#"
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["{APPA}"]
  protocol: TCP
  node: a
  services: {{}}
"#
    );
    format!(
        r#"workloads:{appa}
- uid: Kubernetes//Pod/default/appa2
  name: appa2
  namespace: default
  serviceAccount: appa
  workloadIps: ["{APPA2}"]
  protocol: TCP
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  protocol: TCP
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
"#,
        appa = if with_appa { appa.as_str() } else { "" }
    )
}

/// Seed topology plus appa2 and a stranger on node a, and node c (outside the mesh: no zring,
/// no capture) with pod `ext`; zring on a and b.
fn cluster(driver: &str, with_appa: bool) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    // These workloads speak plain TCP, so none is enrolled: capture them all the same.
    lab.capture_every_pod_address();
    lab.add_pod("a", "appa2", APPA2).unwrap();
    lab.add_pod("a", "stranger", STRANGER).unwrap();
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &config(with_appa),
        &["a", "b"],
        &[("ZRING_DRIVER", driver)],
    )
    .unwrap();
    let want = if driver == "uring" {
        "driver=\"io_uring\""
    } else {
        "driver=\"epoll\""
    };
    for node in ["a", "b"] {
        assert!(
            m.log(node).contains(want),
            "driver not logged: {}",
            m.logs()
        );
    }
    m
}

zring::on_both_drivers!(
    cross_node_tcp_workload,
    same_node_direct_local,
    service_vip_to_endpoint,
    passthrough_to_unknown_address,
    many_connections_spread_across_cores,
    refusals,
    config_edits_apply_live,
    pod_ports_never_meet_spoofed_ports,
);

/// appa → appb across nodes: captured on a (15001, Direct), captured again on b (15006),
/// 64 MiB each way at once, checksummed; appb sees appa's own IP.
fn cross_node_tcp_workload(driver: &str) {
    let c = cluster(driver, true);
    c.serve("appb", 80, 1).unwrap();
    let r = c
        .exchange("appa", (APPB, 80).into(), 64 * MIB, 64 * MIB)
        .unwrap();
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    assert_eq!((r.uploaded, r.downloaded), (64 * MIB, 64 * MIB));
    c.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 1)
        .unwrap();
    c.eventually_logged("a", "complete dur=", 1).unwrap();
    c.eventually_logged("b", "direction=\"inbound\"", 1)
        .unwrap();
    // Byte counts are exact on both nodes: 16 bytes of header, the payload, the trailer.
    let a = c.log("a");
    assert!(a.contains(&format!("bytes_sent={}", 64 * MIB + 16)), "{a}");
    let b = c.log("b");
    assert!(b.contains(&format!("bytes_sent={}", 64 * MIB + 16)), "{b}");
}

/// appa → appa2 on the same node: one hop, no capture on the way back in.
fn same_node_direct_local(driver: &str) {
    let c = cluster(driver, true);
    c.serve("appa2", 8080, 1).unwrap();
    let r = c
        .exchange("appa", (APPA2, 8080).into(), 8 * MIB, 8 * MIB)
        .unwrap();
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    c.eventually_logged("a", "type DirectLocal", 1).unwrap();
    assert!(
        !c.log("b").contains("complete dur="),
        "node b saw a same-node connection"
    );
}

/// appa → the service VIP: zring picks the endpoint and maps port 8000 → 80.
fn service_vip_to_endpoint(driver: &str) {
    let c = cluster(driver, true);
    c.serve("appb", 80, 1).unwrap();
    let r = c.must_exchange("appa", (VIP, 8000).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    c.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 1)
        .unwrap();
    c.eventually_logged("a", "dst.service=\"appb.default.svc.cluster.local\"", 1)
        .unwrap();
}

/// appa → a host outside the mesh: passed through, still from appa's IP.
fn passthrough_to_unknown_address(driver: &str) {
    let c = cluster(driver, true);
    c.serve("ext", 9000, 1).unwrap();
    let r = c
        .exchange("appa", (EXT, 9000).into(), 4 * MIB, 4 * MIB)
        .unwrap();
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    c.eventually_logged(
        "a",
        "proxy to 10.244.3.7:9000 using TCP type Passthrough",
        1,
    )
    .unwrap();
}

/// 128 concurrent connections: all complete intact, and both cores of each zring served some
/// (SO_REUSEPORT spreads by 4-tuple hash; the chance that 128 land on one core is 2^-127).
fn many_connections_spread_across_cores(driver: &str) {
    let c = cluster(driver, true);
    const N: usize = 128;
    c.serve("appb", 80, N).unwrap();
    let results: Vec<Result<Report, String>> = c.lab.pod("appa").run(|| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                std::thread::spawn(move || {
                    let s = TcpStream::connect_timeout(&(APPB, 80).into(), Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    traffic::exchange(s, 256 * 1024 + i as u64, 128 * 1024, i as u64)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(r.peer_seen_by_server.ip(), APPA);
    }
    for node in ["a", "b"] {
        c.eventually_logged(node, "complete dur=", N).unwrap();
        let log = c.log(node);
        for core in ["core=0", "core=1"] {
            let n = log
                .lines()
                .filter(|l| l.contains("complete dur=") && l.contains(core))
                .count();
            assert!(n > 0, "node {node}: no connection on {core}");
        }
    }
}

/// Captured connections to zring's own ports on this node's own addresses, and from pods zring
/// does not know, are refused with a reset; zring keeps serving. (The same port numbers
/// elsewhere are ordinary traffic: `tests/own_ports.rs`.)
fn refusals(driver: &str) {
    let c = cluster(driver, true);
    c.serve("appb", 80, 1).unwrap();
    let node_a = c.lab.node("a").underlay_ip();
    let own = c.exchange("appa", (node_a, 15008).into(), 1024, 1024);
    assert!(own.is_err(), "own port passed: {own:?}");
    c.eventually_logged("a", "is zring itself (one of its own ports", 1)
        .unwrap();
    let stranger = c.exchange("stranger", (APPB, 80).into(), 1024, 1024);
    assert!(stranger.is_err(), "unknown source passed: {stranger:?}");
    c.eventually_logged("a", "unknown source workload 10.244.1.66", 1)
        .unwrap();
    c.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
}

/// Start without appa (its connections are refused), add it by editing the file, then break
/// the file: the broken edit is rejected and the last good snapshot keeps serving.
fn config_edits_apply_live(driver: &str) {
    let c = cluster(driver, false);
    c.serve("appb", 80, 2).unwrap();
    assert!(c.exchange("appa", (APPB, 80).into(), 1024, 1024).is_err());
    std::fs::write(&c.config, config(true)).unwrap();
    c.eventually_logged("a", "workloads=3", 1).unwrap();
    c.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    std::fs::write(&c.config, "workloads: [ {{{ not yaml").unwrap();
    c.eventually_logged("a", "keeping the last good snapshot", 1)
        .unwrap();
    c.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    assert!(
        c.zring("a").try_status().unwrap().is_none(),
        "zring exited on a broken config"
    );
}

/// A pod may widen its own port range (`net.ipv4.ip_local_port_range` is a safe sysctl in
/// Kubernetes) over the ports zring binds when it spoofs that pod's address, and in node mode
/// zring cannot see the pod's sockets. None of the pod's connections may meet a flow of zring's
/// with the same 4-tuple. Outbound: appa, its range set to node a's spoof range, opens 3,000
/// short connections to appb, 32 at a time. Inbound: ext (node c, no zring, so only node b
/// spoofs its address) does the same with node b's range. Every connection completes, and
/// neither client ever sent a SYN twice (a SYN that met zring's flow was lost, and sent again
/// a second later: the kernel's `TCPSynRetrans`, read in the client's namespace).
fn pod_ports_never_meet_spoofed_ports(driver: &str) {
    const CONNS: usize = 3000;
    const AT_ONCE: usize = 32;
    let c = cluster(driver, true);
    // Echoes until the client closes, so the client closes first (as in the bench's crr).
    c.echo("appb", 81).unwrap();
    let mut outcomes = Vec::new();
    for (client, side) in [("appa", SpoofSide::Outbound), ("ext", SpoofSide::Inbound)] {
        let ports = side.ports();
        let range = format!("{} {}", ports.start(), ports.end());
        let pod = c.lab.pod(client);
        pod.netns()
            .sysctls(&[("net.ipv4.ip_local_port_range", range.as_str())])
            .unwrap();
        let syn_retransmits_before = pod.netns().tcp_ext("TCPSynRetrans").unwrap();
        let failures: Vec<String> = pod.run(|| {
            let threads: Vec<_> = (0..AT_ONCE)
                .map(|_| {
                    std::thread::spawn(|| {
                        (0..CONNS / AT_ONCE)
                            .filter_map(|_| one_byte_exchange().err())
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let syn_retransmits =
            pod.netns().tcp_ext("TCPSynRetrans").unwrap() - syn_retransmits_before;
        if !failures.is_empty() || syn_retransmits != 0 {
            outcomes.push(format!(
                "{client} (ports {range}): {} of {CONNS} connections failed {:?}, \
                 {syn_retransmits} SYNs sent again",
                failures.len(),
                failures.first()
            ));
        }
    }
    assert!(
        outcomes.is_empty(),
        "the clients met zring's own flows: {outcomes:#?}"
    );

    fn one_byte_exchange() -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&(APPB, 81).into(), Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"x")?;
        s.read_exact(&mut [0u8; 1])
    }
}
