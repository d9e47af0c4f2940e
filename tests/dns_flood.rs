//! A DNS flood from one pod does not take the proxy from the others (issue 16 item 5), end to
//! end: zring in node mode on node a (one core, so both pods' queries meet on it), DNS capture
//! on, pods `appa` (the victim) and `appa2` (the flooder) enrolled, an upstream of the test's
//! own in pod `ext` on node c that answers `victim.test` and never answers the flood's names.
//!
//! The flood: bursts of UDP queries as fast as the test can send them (until the per-client
//! rate is exceeded), each a forward that would hold a slot for the whole upstream timeout
//! (60 s, longer than the test), then dozens of TCP connections held open. Checked: the
//! victim's queries, over UDP and TCP, are still forwarded and answered while the flood holds
//! what it could take; the drops are counted by reason (`rate_limited`, `client_inflight`).
//! Without the per-client bounds the flood would hold every one of the core's forward slots
//! (`ZRING_DNS_MAX_INFLIGHT`) until the upstream timeout and the victim's forwards would be
//! dropped (`overload`).
//!
//! Needs root; waits are conditions with deadlines.

#[path = "fake_dns/server.rs"]
mod fake_dns;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use fake_dns::Reply;
use zring::lab::{Lab, Mesh, Netns};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPA2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
/// The pods' nameserver: the capture takes it to 15053.
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VICTIM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
/// The core's forward slots; a client gets a quarter.
const MAX_INFLIGHT: usize = 64;

fn config() -> String {
    let pod = |name: &str, ip: Ipv4Addr| {
        format!(
            r#"
- uid: Kubernetes//Pod/default/{name}
  name: {name}
  namespace: default
  serviceAccount: {name}
  canonicalName: {name}
  workloadIps: ["{ip}"]
  protocol: HBONE
  node: a
  services: {{}}"#
        )
    };
    format!(
        "workloads:{}{}\nservices: []\npolicies: []\n",
        pod("appa", APPA),
        pod("appa2", APPA2)
    )
}

/// One UDP question from `ns` to the cluster DNS address; the answer's addresses, if any came.
fn udp_ask(ns: &Netns, id: u16, name: &str) -> Option<Vec<IpAddr>> {
    let msg = fake_dns::query(id, name, 1);
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(&msg, (CLUSTER_DNS, 53)).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.recv(&mut buf).ok()?;
        let (got, rcode, ips) = fake_dns::read_answer(&buf[..n]);
        (got == id && rcode == 0).then_some(ips)
    })
}

/// One TCP question from `ns`; the answer's addresses, if any came.
fn tcp_ask(ns: &Netns, id: u16, name: &str) -> Option<Vec<IpAddr>> {
    let msg = fake_dns::query(id, name, 1);
    ns.run(move || {
        let to = SocketAddr::from((CLUSTER_DNS, 53));
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(&(msg.len() as u16).to_be_bytes()).ok()?;
        s.write_all(&msg).ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).ok()?;
        let mut a = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut a).ok()?;
        let (got, rcode, ips) = fake_dns::read_answer(&a);
        (got == id && rcode == 0).then_some(ips)
    })
}

#[test]
fn one_client_flooding_leaves_the_others_answered() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    let asked = fake_dns::serve(lab.pod("ext").netns(), IpAddr::V4(EXT), |name, _| {
        if name == "victim.test" {
            Reply::Addrs(vec![VICTIM_ANSWER.into()], 30)
        } else {
            Reply::Silent
        }
    });
    lab.capture_dns();
    let upstreams = format!("{EXT}:53");
    let inflight = MAX_INFLIGHT.to_string();
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a"],
        &[
            ("ZRING_CORES", "1"),
            ("ZRING_DNS_UPSTREAMS", &upstreams),
            ("ZRING_DNS_UPSTREAM_TIMEOUT_MS", "60000"),
            ("ZRING_DNS_MAX_INFLIGHT", &inflight),
        ],
    )
    .unwrap();
    let appa = m.lab.pod("appa").netns().clone();
    let appa2 = m.lab.pod("appa2").netns().clone();
    m.eventually("the victim answered before the flood", || {
        udp_ask(&appa, 1, "victim.test").is_some()
    })
    .unwrap();

    // The UDP flood: every query a distinct name the upstream never answers, sent in bursts
    // until the proxy has both limited its rate and refused it forward slots.
    let mut sent = 0u32;
    m.eventually("the flood limited", || {
        let from = sent;
        sent += 500;
        appa2.run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in from..from + 500 {
                let _ = s.send_to(
                    &fake_dns::query(i as u16, &format!("f{i}.flood.test"), 1),
                    (CLUSTER_DNS, 53),
                );
            }
        });
        let s = m.scrape("a");
        let r = |reason: &str| s.sum("zring_dns_rejected_total", &[("reason", reason)]);
        r("rate_limited") >= 1.0 && r("client_inflight") >= 1.0
    })
    .unwrap();
    // Then TCP connections held open (each would hold a slot).
    let held: Vec<TcpStream> = appa2.run(|| {
        (0..2 * MAX_INFLIGHT)
            .filter_map(|_| TcpStream::connect((CLUSTER_DNS, 53)).ok())
            .collect()
    });

    // The victim, over UDP and TCP: forwarded and answered all the same. (A lost datagram is
    // asked again, as a resolver would.)
    let mut id = 100;
    m.eventually("the victim answered over UDP during the flood", || {
        id += 1;
        udp_ask(&appa, id, "victim.test") == Some(vec![VICTIM_ANSWER.into()])
    })
    .unwrap();
    m.eventually("the victim answered over TCP during the flood", || {
        id += 1;
        tcp_ask(&appa, id, "victim.test") == Some(vec![VICTIM_ANSWER.into()])
    })
    .unwrap();
    assert!(asked.count("victim.test", 1) >= 3);

    let s = m.scrape("a");
    let r = |reason: &str| s.sum("zring_dns_rejected_total", &[("reason", reason)]);
    assert_eq!(r("overload"), 0.0, "the core's bound was never reached");
    assert!(r("client_inflight") >= 1.0);
    // The flood reached the upstream only as far as its share of the forwards.
    let flood_forwards: u64 = (0..sent)
        .map(|i| asked.count(&format!("f{i}.flood.test"), 1))
        .sum();
    assert!(
        flood_forwards <= (MAX_INFLIGHT / 4) as u64,
        "{flood_forwards} flood queries forwarded"
    );
    drop(held);
    assert!(!m.log("a").contains("panicked"), "{}", m.log("a"));
}
