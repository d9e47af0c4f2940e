//! A waypoint whose workload is addressed by hostname (istiod's shape for a waypoint behind a
//! ServiceEntry with `resolution: DNS`: a workload with a hostname and no IP), end to end in
//! network namespaces: zring in node mode on nodes a and b, the waypoint stand-in
//! (`lab::waypoint`) in pod `waypoint` on node c outside capture, and a DNS server of the
//! test's own in pod `dns` on node c, named by `ZRING_DNS_UPSTREAMS`.
//!
//! Checked: appa → service appb's VIP, whose waypoint is named by hostname
//! (`default/wp.default.svc.cluster.local`) and whose only endpoint is `wp.hosts.test`, is
//! tunnelled to the address the DNS server gives for that name, asking for the VIP as
//! `:authority` and proving the waypoint's identity; the name was resolved on demand (counted
//! in `zring_dns_on_demand_total`). A service whose waypoint's name does not exist (NXDOMAIN)
//! is refused per connection with `response_flags="DNS_FAILED"`, as a hostname endpoint is.
//! Needs root; waits are conditions with deadlines.

#[path = "fake_dns/server.rs"]
mod fake_dns;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use fake_dns::Reply;
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const WAYPOINT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 20);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const LOST_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 204);
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/default/sa/waypoint";

/// A waypoint workload known by `host` only, behind service `name` (one VIP, port 15008).
fn waypoint_entry(name: &str, host: &str, vip: &str) -> (String, String) {
    (
        format!(
            r#"
- uid: Kubernetes/networking.istio.io/ServiceEntry/default/{name}/{host}
  name: {name}
  namespace: default
  serviceAccount: waypoint
  workloadIps: []
  hostname: {host}
  protocol: HBONE
  services:
    "default/{name}.default.svc.cluster.local":
      15008: 15008"#
        ),
        format!(
            r#"
- name: {name}
  namespace: default
  hostname: {name}.default.svc.cluster.local
  vips: ["/{vip}"]
  ports:
    15008: 15008"#
        ),
    )
}

fn config() -> String {
    let (wp, wp_svc) = waypoint_entry("wp", "wp.hosts.test", "240.240.9.1");
    let (lost, lost_svc) = waypoint_entry("lostwp", "lostwp.hosts.test", "240.240.9.2");
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
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
    "default/lost.default.svc.cluster.local":
      8000: 80{wp}{lost}
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/{VIP}"]
  ports:
    8000: 80
  waypoint:
    destination: "default/wp.default.svc.cluster.local"
    hboneMtlsPort: 15008
- name: lost
  namespace: default
  hostname: lost.default.svc.cluster.local
  vips: ["/{LOST_VIP}"]
  ports:
    8000: 80
  waypoint:
    destination: "default/lostwp.default.svc.cluster.local"
    hboneMtlsPort: 15008{wp_svc}{lost_svc}
policies: []
"#
    )
}

/// The DNS server's table: the waypoint's name; every other name does not exist.
fn table(name: &str, _qtype: u16) -> Reply {
    match name {
        "wp.hosts.test" => Reply::Addrs(vec![WAYPOINT.into()], 300),
        _ => Reply::NxDomain,
    }
}

/// From appa to `to`: sends `payload`, half-closes, reads everything back.
fn echo_through(m: &Mesh, to: SocketAddr, payload: &'static [u8]) -> std::io::Result<Vec<u8>> {
    m.lab.pod("appa").run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(payload)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)?;
        Ok(back)
    })
}

#[test]
fn a_waypoint_addressed_by_hostname_is_resolved_on_demand() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "waypoint", WAYPOINT).unwrap();
    lab.add_pod("c", "dns", DNS).unwrap();
    let asked = fake_dns::serve(lab.pod("dns").netns(), IpAddr::V4(DNS), table);
    let upstreams = format!("{DNS}:53");
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[
            ("ZRING_DNS_UPSTREAMS", &upstreams),
            ("ZRING_DNS_UPSTREAM_TIMEOUT_MS", "400"),
        ],
    )
    .unwrap();
    let seen =
        zring::lab::waypoint::start(m.lab.pod("waypoint").netns(), &m.ca_dir, WAYPOINT_ID).unwrap();

    let echoed = echo_through(&m, (VIP, 8000).into(), b"through a waypoint known by name")
        .unwrap_or_else(|e| panic!("appa → VIP: {e}\n{}", m.logs()));
    assert_eq!(echoed, b"through a waypoint known by name");
    let s = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        s.authority,
        format!("{VIP}:8000"),
        "the VIP, not an endpoint"
    );
    assert_eq!(s.peer_identity, "spiffe://cluster.local/ns/default/sa/appa");
    m.eventually_logged(
        "a",
        "proxy to 10.96.101.203:8000 using HBONE via 10.244.3.20:15008 type ToServerWaypoint",
        1,
    )
    .unwrap();
    m.eventually_logged("a", &format!(r#"dst.identity="{WAYPOINT_ID}""#), 1)
        .unwrap();
    assert!(
        asked.count("wp.hosts.test", 1) >= 1,
        "the waypoint's name was asked"
    );

    // The waypoint's name does not exist: refused, flagged as a failed resolution.
    let e = echo_through(&m, (LOST_VIP, 8000).into(), b"nowhere");
    assert!(e.as_ref().map_or(true, |back| back.is_empty()), "{e:?}");
    m.eventually_logged("a", "no such name (NXDOMAIN)", 1)
        .unwrap();
    let log = m.log("a");
    let line = log
        .lines()
        .find(|l| l.contains("complete") && l.contains("lostwp.hosts.test"))
        .unwrap_or_else(|| panic!("no access-log line for lostwp.hosts.test:\n{log}"));
    assert!(line.contains(r#"response_flags="DNS_FAILED""#), "{line}");
    m.eventually("the outcomes counted", || {
        let s = m.scrape("a");
        s.sum("zring_dns_on_demand_total", &[("result", "resolved")]) >= 1.0
            && s.sum("zring_dns_on_demand_total", &[("result", "nxdomain")]) >= 1.0
            && s.sum(
                "istio_tcp_connections_failed_total",
                &[("response_flags", "DNS_FAILED")],
            ) >= 1.0
    })
    .unwrap();
    assert!(!m.log("a").contains("panicked"), "{}", m.log("a"));
}
