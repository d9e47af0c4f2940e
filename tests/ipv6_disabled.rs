//! `IPV6_ENABLED=false` (ztunnel's switch) end to end, on the dual-stack lab
//! (`Lab::seed_dual_stack`: appa `10.244.1.8` and `fd00:244:1::8` on node a, appb
//! `10.244.2.4` and `fd00:244:2::4` on node b):
//!
//! - node mode: zring opens no IPv6 socket (no `[::]` listener on 15001, 15006, 15008, and no
//!   IPv6 DNS socket), the node capture is `table ip zring` alone with no IPv6 policy rule,
//!   installed by `zring redirect apply` run with the switch off (which also takes away the
//!   `ip6` table an earlier install left), and the keeper fills only the IPv4 set; IPv4 still
//!   goes over HBONE, and a v6 connection passes the nodes untouched (no access log); the DNS
//!   proxy answers a mesh service's AAAA with no records and its A with the VIP;
//! - in-pod mode: the pods' listeners are IPv4 only.
//!
//! Runs as root under `cargo test`; without root `Lab::seed_dual_stack` fails the test. Waits
//! are conditions with deadlines, never sleeps.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

use zring::lab::{
    Lab, Mesh, SEED_APPA6, SEED_APPB6,
    dns::{self, query},
    traffic,
};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0x101, 0x203);
/// The cluster DNS address pods ask: captured to the node's 15053.
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const KIB: u64 = 1 << 10;
const PROXY_PORTS: [u16; 4] = [15001, 15006, 15008, 15053];

/// appa on node a, appb on node b behind dual-stack service appb (8000 → 80), both HBONE
/// with both families' addresses.
fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA4}", "{SEED_APPA6}"], protocol: HBONE, node: a, services: {{}} }}
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

/// Local ports of sockets in `/proc/<pid>/net/<table>` (that process's namespace); for TCP
/// tables only those listening.
fn ports(pid: u32, table: &str) -> BTreeSet<u16> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let listening = !table.starts_with("tcp") || *f.get(3)? == "0A";
            listening.then_some(port)
        })
        .collect()
}

fn proxy_ports(pid: u32, table: &str) -> BTreeSet<u16> {
    ports(pid, table)
        .into_iter()
        .filter(|p| PROXY_PORTS.contains(p))
        .collect()
}

/// Runs `program args…` with `env` in node `node`'s namespace: its stdout, or a panic.
fn on_node(m: &Mesh, node: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let name = program.to_owned();
    let out = m
        .lab
        .node(node)
        .run(move || Command::new(&name).args(&args).envs(env).output())
        .expect("running a command in a node");
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn serve(m: &Mesh, pod: &str, port: u16) {
    let l = m
        .lab
        .pod(pod)
        .run(move || TcpListener::bind(("::", port)))
        .unwrap();
    traffic::spawn_server(l, None);
}

/// The id, rcode, answer count and the A/AAAA addresses of an answer.
fn addresses(m: &[u8]) -> (u16, u16, u16, Vec<IpAddr>) {
    let a = dns::answer(m);
    (a.id, a.rcode, a.answers, a.addresses)
}

/// The cluster's DNS service address, as a pod's resolv.conf names it.
const DNS: SocketAddr = SocketAddr::new(IpAddr::V4(CLUSTER_DNS), 53);

#[test]
fn ipv6_disabled_node_mode_listens_captures_and_answers_ipv4_only() {
    let mut lab = Lab::seed_dual_stack().expect("lab (needs root, ip, nft)");
    lab.capture_dns();
    let off = [("IPV6_ENABLED", "false")];
    let m = Mesh::start(lab, Path::new(ZRING), &config(), &["a", "b"], &off).unwrap();
    serve(&m, "appb", 80);

    // No IPv6 socket of zring's own ports; the IPv4 ones are there.
    for node in ["a", "b"] {
        let pid = m.zring(node).pid();
        assert_eq!(
            proxy_ports(pid, "tcp6"),
            BTreeSet::new(),
            "node {node}: tcp6"
        );
        assert_eq!(
            proxy_ports(pid, "udp6"),
            BTreeSet::new(),
            "node {node}: udp6"
        );
        assert_eq!(
            proxy_ports(pid, "tcp"),
            BTreeSet::from(PROXY_PORTS),
            "node {node}: tcp"
        );
        assert!(ports(pid, "udp").contains(&15053), "node {node}: udp");
    }

    // Node capture from `zring redirect` with the switch off: the lab installed both
    // families' halves before zring started; the apply leaves the IPv4 one only.
    let pod_cidrs = "10.244.1.0/24,fd00:244:1::/64";
    let redirect_env = [
        ("IPV6_ENABLED", "false"),
        ("ZRING_POD_CIDRS", pod_cidrs),
        ("ZRING_POD_INTERFACES", "zp*"),
        ("ISTIO_META_DNS_CAPTURE", "true"),
    ];
    let printed = on_node(&m, "a", ZRING, &["redirect", "print"], &redirect_env);
    assert!(printed.contains("table ip zring"), "{printed}");
    assert!(!printed.contains("ip6"), "{printed}");
    assert!(!printed.contains("-6 "), "{printed}");
    let before = on_node(&m, "a", "nft", &["list", "tables"], &[]);
    assert!(before.contains("table ip6 zring"), "{before}");
    // Its IPv6 set stays empty: the keeper fills the IPv4 one only.
    let set6 = on_node(
        &m,
        "a",
        "nft",
        &["list", "set", "ip6", "zring", "ztunnel-pods-ips"],
        &[],
    );
    assert!(!set6.contains("fd00:244"), "{set6}");
    on_node(&m, "a", ZRING, &["redirect", "apply"], &redirect_env);
    let tables = on_node(&m, "a", "nft", &["list", "tables"], &[]);
    assert!(tables.contains("table ip zring"), "{tables}");
    assert!(!tables.contains("table ip6 zring"), "{tables}");
    let rules6 = on_node(&m, "a", "ip", &["-6", "rule", "show"], &[]);
    assert!(!rules6.contains("0x111"), "{rules6}");
    // Again, with no IPv6 half left to take away (its route table gone): still a success.
    on_node(&m, "a", ZRING, &["redirect", "apply"], &redirect_env);
    // The apply made the IPv4 set anew, empty: the keeper refills it (until then appa's
    // connections would bypass capture and be cut when it returns).
    m.eventually("node a's IPv4 set refilled", || {
        on_node(
            &m,
            "a",
            "nft",
            &["list", "set", "ip", "zring", "ztunnel-pods-ips"],
            &[],
        )
        .contains("10.244.1.8")
    })
    .unwrap();

    // IPv4 over HBONE, as ever.
    let r = m.must_exchange("appa", (APPB4, 80).into(), 16 * KIB, 16 * KIB);
    assert_eq!(
        r.peer_seen_by_server.ip().to_canonical(),
        IpAddr::from(APPA4)
    );
    m.eventually_logged("a", r#"dst.hbone_addr="10.244.2.4:15008""#, 1)
        .unwrap();
    let r = m.must_exchange("appa", (VIP4, 8000).into(), 4 * KIB, 4 * KIB);
    assert_eq!(
        r.peer_seen_by_server.ip().to_canonical(),
        IpAddr::from(APPA4)
    );

    // IPv6 passes the nodes untouched: straight from appa's v6 address, no zring log.
    let r = m.must_exchange("appa", (SEED_APPB6, 80).into(), 4 * KIB, 4 * KIB);
    assert_eq!(r.peer_seen_by_server.ip(), IpAddr::from(SEED_APPA6));
    for node in ["a", "b"] {
        let log = m.log(node);
        let proxied = log
            .lines()
            .find(|l| l.contains("complete dur=") && l.contains("fd00:244"));
        assert_eq!(proxied, None, "node {node}");
    }

    // DNS: the service's AAAA is an empty answer (the name exists), its A the v4 VIP.
    let mut answer = None;
    m.eventually("appa's DNS answered by node a's proxy", || {
        answer = dns::udp_ask_in(m.lab.pod("appa"), DNS, query(41, "appb", 28));
        answer.is_some()
    })
    .unwrap();
    assert_eq!(addresses(&answer.unwrap()), (41, 0, 0, Vec::new()));
    let a = dns::udp_ask_in(
        m.lab.pod("appa"),
        DNS,
        query(42, "appb.default.svc.cluster.local", 1),
    )
    .unwrap();
    assert_eq!(addresses(&a), (42, 0, 1, vec![IpAddr::from(VIP4)]));
}

/// Sockets of zring's ports in `pod`'s namespace, from `/proc/thread-self/net/<table>` read
/// by a thread inside it.
fn pod_proxy_ports(m: &Mesh, pod: &str, table: &'static str) -> BTreeSet<u16> {
    let text = m
        .lab
        .pod(pod)
        .run(move || std::fs::read_to_string(format!("/proc/thread-self/net/{table}")))
        .expect("the pod's socket table");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let listening = !table.starts_with("tcp") || *f.get(3)? == "0A";
            (listening && PROXY_PORTS.contains(&port)).then_some(port)
        })
        .collect()
}

#[test]
fn ipv6_disabled_in_pod_mode_opens_ipv4_listeners_only() {
    let lab = Lab::seed_dual_stack().expect("lab (needs root, ip, nft)");
    let off = [("IPV6_ENABLED", "false")];
    let m = Mesh::start_inpod(lab, Path::new(ZRING), &config(), &["a", "b"], &off).unwrap();
    serve(&m, "appb", 80);
    let r = m.must_exchange("appa", (APPB4, 80).into(), 16 * KIB, 16 * KIB);
    assert_eq!(
        r.peer_seen_by_server.ip().to_canonical(),
        IpAddr::from(APPA4)
    );
    m.eventually_logged("a", r#"dst.hbone_addr="10.244.2.4:15008""#, 1)
        .unwrap();
    for pod in ["appa", "appb"] {
        assert_eq!(
            pod_proxy_ports(&m, pod, "tcp"),
            BTreeSet::from(PROXY_PORTS),
            "{pod}: tcp"
        );
        assert_eq!(
            pod_proxy_ports(&m, pod, "tcp6"),
            BTreeSet::new(),
            "{pod}: tcp6"
        );
        assert_eq!(
            pod_proxy_ports(&m, pod, "udp6"),
            BTreeSet::new(),
            "{pod}: udp6"
        );
    }
}
