//! Workloads addressed by hostname (a ServiceEntry with `resolution: DNS`, as istiod sends it:
//! a workload with a hostname and no IP, the endpoint of the entry's VIP), end to end in
//! network namespaces: zring in node mode on nodes a and b, a DNS server of the test's own in
//! pod `ext` on node c (outside the mesh), named by `ZRING_DNS_UPSTREAMS`.
//!
//! Checked: appa → the VIP of `db.hosts.test` (plain TCP) reaches the server on `ext`, whose
//! address zring learned from the DNS server; a second connection is answered from the cache
//! (the server is not asked again); appa → the VIP of `appb.hosts.test` (an HBONE workload
//! known by name) goes over HBONE to appb's node; a name that does not exist (NXDOMAIN) and one
//! whose server never answers (timeout) are refused per connection with
//! `response_flags="DNS_FAILED"` and counted in `zring_dns_on_demand_total`, and zring carries
//! on. Runs on both drivers. Needs root; waits are conditions with deadlines.

#[path = "fake_dns/server.rs"]
mod fake_dns;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use fake_dns::Reply;
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// Node c, outside the mesh: the external database and the DNS server.
const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
const DB_VIP: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 1);
const APPB_VIP: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 2);
const GONE_VIP: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 3);
const SLOW_VIP: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 4);
const MIB: u64 = 1 << 20;

/// A ServiceEntry host: its workload (hostname, no IP, `protocol`, service account `sa`) and
/// its service (one VIP, `port` → `target`).
fn entry(
    name: &str,
    vip: Ipv4Addr,
    port: u16,
    target: u16,
    protocol: &str,
    sa: &str,
) -> (String, String) {
    let host = format!("{name}.hosts.test");
    (
        format!(
            r#"
- uid: Kubernetes/networking.istio.io/ServiceEntry/default/{name}/{host}
  name: {name}
  namespace: default
  serviceAccount: {sa}
  workloadIps: []
  hostname: {host}
  protocol: {protocol}
  services:
    "default/{host}":
      {port}: {target}"#
        ),
        format!(
            r#"
- name: {name}
  namespace: default
  hostname: {host}
  vips: ["/{vip}"]
  ports:
    {port}: {target}"#
        ),
    )
}

fn config() -> String {
    let entries = [
        entry("db", DB_VIP, 5432, 5432, "TCP", "db"),
        entry("appb", APPB_VIP, 8000, 80, "HBONE", "appb"),
        entry("gone", GONE_VIP, 5432, 5432, "TCP", "db"),
        entry("slow", SLOW_VIP, 5432, 5432, "TCP", "db"),
    ];
    let workloads: String = entries.iter().map(|(w, _)| w.as_str()).collect();
    let services: String = entries.iter().map(|(_, s)| s.as_str()).collect();
    format!(
        r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["{APPA}"]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  protocol: HBONE
  node: b
  services: {{}}{workloads}
services:{services}
policies: []
"#
    )
}

/// The DNS server's table: two names with addresses (TTL 300), one that does not exist, one
/// never answered; every AAAA question is answered with no records.
fn table(name: &str, _qtype: u16) -> Reply {
    match name {
        "db.hosts.test" => Reply::Addrs(vec![EXT.into()], 300),
        "appb.hosts.test" => Reply::Addrs(vec![APPB.into()], 300),
        "slow.hosts.test" => Reply::Silent,
        _ => Reply::NxDomain,
    }
}

zring::on_both_drivers!(hostname_endpoints_resolved_on_demand);

fn hostname_endpoints_resolved_on_demand(driver: &str) {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    let asked = fake_dns::serve(lab.pod("ext").netns(), IpAddr::V4(EXT), table);
    let upstreams = format!("{EXT}:53");
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[
            ("ZRING_DRIVER", driver),
            ("ZRING_DNS_UPSTREAMS", &upstreams),
            ("ZRING_DNS_UPSTREAM_TIMEOUT_MS", "400"),
        ],
    )
    .unwrap();

    // Plain TCP to the external database, by its ServiceEntry VIP: resolved, then Direct to
    // the address the DNS server gave, from appa's own IP.
    m.serve("ext", 5432, 3).unwrap();
    let r = m.must_exchange("appa", (DB_VIP, 5432).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged("a", "proxy to 10.244.3.7:5432 using TCP type Direct", 1)
        .unwrap();
    assert_eq!(asked.count("db.hosts.test", 1), 1, "asked once, for A");
    // Again: from the cache of whichever core takes it, or asked once more by the other core.
    m.must_exchange("appa", (DB_VIP, 5432).into(), MIB, MIB);
    assert!(asked.count("db.hosts.test", 1) <= 2);
    assert_eq!(
        asked.count("db.hosts.test", 28),
        0,
        "A answered: AAAA never asked"
    );

    // An HBONE workload known by name: the tunnel goes to the address it resolves to, and the
    // peer there proves the workload's identity.
    m.serve("appb", 80, 1).unwrap();
    let r = m.must_exchange("appa", (APPB_VIP, 8000).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged(
        "a",
        "proxy to 240.240.0.2:8000 using HBONE via 10.244.2.4:15008 type ToServer",
        1,
    )
    .unwrap();
    m.eventually_logged("b", "got CONNECT request to 10.244.2.4:80", 1)
        .unwrap();

    // A name that does not exist, and one whose server never answers: refused, flagged.
    for (vip, why) in [
        (GONE_VIP, "no such name (NXDOMAIN)"),
        (SLOW_VIP, "no upstream resolver answered in time"),
    ] {
        let e = m.exchange("appa", (vip, 5432).into(), 1024, 1024);
        assert!(e.is_err(), "{vip}: {e:?}");
        m.eventually_logged("a", why, 1).unwrap();
    }
    let log = m.log("a");
    for host in ["gone.hosts.test", "slow.hosts.test"] {
        let line = log
            .lines()
            .find(|l| l.contains("complete") && l.contains(host))
            .unwrap_or_else(|| panic!("no access-log line for {host}:\n{log}"));
        assert!(line.contains(r#"response_flags="DNS_FAILED""#), "{line}");
    }
    m.eventually("the outcomes counted", || {
        let s = m.scrape("a");
        let r = |result: &str| s.sum("zring_dns_on_demand_total", &[("result", result)]);
        r("resolved") >= 2.0
            && r("nxdomain") >= 1.0
            && r("timeout") >= 1.0
            && s.sum(
                "istio_tcp_connections_failed_total",
                &[("response_flags", "DNS_FAILED")],
            ) >= 2.0
    })
    .unwrap();

    // zring carries on: the resolved names still route.
    m.must_exchange("appa", (DB_VIP, 5432).into(), 1024, 1024);
    assert!(!m.log("a").contains("panicked"), "{}", m.log("a"));
}
