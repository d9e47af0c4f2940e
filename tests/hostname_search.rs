//! Workloads addressed by a hostname that is not fully qualified are resolved through the
//! search domains of zring's resolv.conf, as ztunnel's resolver (hickory, from the proxy's
//! `/etc/resolv.conf`) resolves them: zring in node mode on nodes a and b reads
//! `ZRING_DNS_RESOLV_CONF`, a file of the test's own naming the DNS server in pod `ext` on node
//! c (`nameserver`), `search hosts.test` and `options ndots:5`.
//!
//! Checked: appa → the VIP of a ServiceEntry whose endpoint is `db.corp` reaches the server on
//! `ext` at the address the DNS server holds for `db.corp.hosts.test`, asked first (fewer dots
//! than ndots); the name as written is never asked since the search domain answered. Needs
//! root; waits are conditions with deadlines.

#[path = "fake_dns/server.rs"]
mod fake_dns;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use fake_dns::Reply;
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
const DB_VIP: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 1);

fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
- uid: Kubernetes/networking.istio.io/ServiceEntry/default/db/db.corp
  name: db
  namespace: default
  serviceAccount: db
  workloadIps: []
  hostname: db.corp
  protocol: TCP
  services:
    "default/db.corp":
      5432: 5432
services:
- name: db
  namespace: default
  hostname: db.corp
  vips: ["/{DB_VIP}"]
  ports:
    5432: 5432
policies: []
"#
    )
}

fn table(name: &str, _qtype: u16) -> Reply {
    match name {
        "db.corp.hosts.test" => Reply::Addrs(vec![EXT.into()], 300),
        _ => Reply::NxDomain,
    }
}

#[test]
fn a_short_hostname_is_resolved_through_the_search_domains() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    let asked = fake_dns::serve(lab.pod("ext").netns(), IpAddr::V4(EXT), table);
    let resolv_conf = lab.dir().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!("nameserver {EXT}\nsearch hosts.test\noptions ndots:5\n"),
    )
    .unwrap();
    let resolv_conf = resolv_conf.to_string_lossy().into_owned();
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[("ZRING_DNS_RESOLV_CONF", &resolv_conf)],
    )
    .unwrap();

    m.serve("ext", 5432, 1).unwrap();
    let r = m.must_exchange("appa", (DB_VIP, 5432).into(), 1 << 16, 1 << 16);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged("a", "proxy to 10.244.3.7:5432 using TCP type Direct", 1)
        .unwrap();
    assert_eq!(asked.count("db.corp.hosts.test", 1), 1);
    assert_eq!(
        asked.count("db.corp", 1),
        0,
        "the search domain answered first"
    );
}
