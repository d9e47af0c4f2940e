//! Issue 15, item 6: does node mode's passthrough give pods reach they did not have? Verified in
//! network namespaces with real zring processes (node mode).
//!
//! The lab: behind node a, a namespace `meta` holds 169.254.169.254 (routed by node a only, as
//! a cloud's metadata address is), serving on :80 with an IP TTL of 1 on its packets (what AWS
//! IMDSv2 does for its token answer, so that a container one hop behind the node cannot get it)
//! and on :81 with the default TTL; node a has a FORWARD-chain rule dropping traffic to :81.
//! `plain` is a pod on node a outside the mesh (forwarded by the node as usual), `appa` an
//! enrolled one (captured, so zring's passthrough carries it: 169.254.169.254 is no workload).
//!
//! What the kernel showed, with `ZRING_PASSTHROUGH_ALLOW_LOCAL=true` (the behaviour before this
//! item): **confirmed**. `plain` gets neither answer (the TTL-1 answer dies when node a
//! forwards it; the FORWARD rule drops the other), while `appa` gets both: zring re-originates
//! the connection in node a's namespace (from appa's address, `IP_TRANSPARENT`), so the answer
//! is delivered locally to zring's socket, never forwarded (no TTL decrement), and zring's
//! upstream packets leave through the output hook, which FORWARD rules never see. A
//! `postrouting` rule, which both paths cross, stops both (the advice in `proxy::local_reach`).
//!
//! Hence the default: in node mode passthrough to link-local, loopback and the node's own
//! addresses is refused (`response_flags="PASSTHROUGH_LOCAL"`, a reset): `appa` gets nothing
//! from 169.254.169.254, like `plain`.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use zring::lab::mesh::eventually;
use zring::lab::{Lab, Mesh, traffic};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const PLAIN: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const META_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 30);
/// The TTL-1 service and the one behind node a's FORWARD rule.
const HOP_LIMITED: u16 = 80;
const FILTERED: u16 = 81;
/// The control: default TTL, no filter; every pod reaches it without zring.
const OPEN: u16 = 82;

const CONFIG: &str = r#"
workloads:
- { uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["10.244.1.8"], protocol: HBONE, node: a, services: {} }
- { uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["10.244.2.4"], protocol: HBONE, node: b, services: {} }
policies: []
"#;

/// Runs an nft script in node a's namespace.
fn nft_on_a(m: &Mesh, script: &str) {
    let script = script.to_owned();
    let out = m
        .lab
        .node("a")
        .run(move || -> std::io::Result<std::process::Output> {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .expect("nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lab above, zring on both nodes with `env`.
fn mesh(env: &[(&str, &str)]) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "plain", PLAIN).unwrap();
    let meta = lab.add_pod("a", "meta", META_POD).unwrap();
    meta.netns()
        .ip_line(&format!("addr add {METADATA}/32 dev eth0"))
        .unwrap();
    let meta_if = meta.host_if().to_owned();
    lab.node("a")
        .netns()
        .ip_line(&format!("route add {METADATA}/32 dev {meta_if}"))
        .unwrap();
    let m = Mesh::start(lab, Path::new(ZRING), CONFIG, &["a", "b"], env).unwrap();
    for (port, ttl) in [(HOP_LIMITED, Some(1)), (FILTERED, None), (OPEN, None)] {
        let listener = m
            .lab
            .pod("meta")
            .run(move || -> std::io::Result<std::net::TcpListener> {
                use socket2::{Domain, Socket, Type};
                let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                if let Some(ttl) = ttl {
                    // The SYN-ACK and every later packet of an accepted connection carry it.
                    s.set_ttl(ttl)?;
                }
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::from((METADATA, port)).into())?;
                s.listen(64)?;
                Ok(s.into())
            })
            .unwrap();
        traffic::spawn_server(listener, None);
    }
    nft_on_a(
        &m,
        &format!(
            "table inet hnode-egress {{\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip daddr {METADATA} tcp dport {FILTERED} counter drop\n\t}}\n}}\n"
        ),
    );
    m
}

/// One exchange from `pod` to the metadata address on `port`; `Err` says how it failed.
fn fetch(m: &Mesh, pod: &str, port: u16) -> Result<(), String> {
    let to = SocketAddr::from((METADATA, port));
    m.lab.pod(pod).run(move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        traffic::exchange(s, 512, 512, 7)
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Without zring's passthrough the node's protections hold: the answer with TTL 1 never reaches
/// a pod one hop behind the node, and the FORWARD rule drops the other.
fn protections_hold_for_a_pod_outside_the_mesh(m: &Mesh) {
    fetch(m, "plain", OPEN).unwrap_or_else(|e| panic!("the control: {e}"));
    assert!(
        fetch(m, "plain", HOP_LIMITED).is_err(),
        "TTL 1 crossed the node"
    );
    assert!(
        fetch(m, "plain", FILTERED).is_err(),
        "the FORWARD rule let it through"
    );
}

#[test]
fn passthrough_to_link_local_is_refused_by_default() {
    let m = mesh(&[]);
    protections_hold_for_a_pod_outside_the_mesh(&m);
    for port in [HOP_LIMITED, FILTERED] {
        let r = fetch(&m, "appa", port);
        assert!(r.is_err(), "appa reached {METADATA}:{port} through zring");
    }
    m.eventually_logged("a", r#"response_flags="PASSTHROUGH_LOCAL""#, 2)
        .unwrap();
    let log = m.log("a");
    assert!(
        log.contains("passthrough to 169.254.169.254:80, a link-local"),
        "{log}"
    );
    eventually("the refusals counted", || {
        let n = m.scrape("a").sum(
            "istio_tcp_connections_closed_total",
            &[("response_flags", "PASSTHROUGH_LOCAL")],
        );
        (n >= 2.0).then_some(()).ok_or(format!("{n}"))
    });
}

#[test]
fn host_reorigination_bypassed_hop_limit_and_forward_filter() {
    let m = mesh(&[("ZRING_PASSTHROUGH_ALLOW_LOCAL", "true")]);
    protections_hold_for_a_pod_outside_the_mesh(&m);
    // The finding: through zring, both answers reach appa.
    fetch(&m, "appa", HOP_LIMITED).unwrap_or_else(|e| panic!("hop limit: {e}\n{}", m.logs()));
    fetch(&m, "appa", FILTERED).unwrap_or_else(|e| panic!("FORWARD filter: {e}\n{}", m.logs()));
    // A postrouting rule sees zring's re-originated packets too.
    nft_on_a(
        &m,
        &format!(
            "table inet hnode-egress-post {{\n\tchain postrouting {{\n\t\ttype filter hook postrouting priority filter; policy accept;\n\t\tip daddr {METADATA} tcp dport {FILTERED} counter drop\n\t}}\n}}\n"
        ),
    );
    assert!(
        fetch(&m, "appa", FILTERED).is_err(),
        "postrouting did not stop zring's packets"
    );
    assert!(fetch(&m, "plain", FILTERED).is_err());
}
