//! End to end, in network namespaces: faults around zring. The peer node's zring killed
//! mid-transfer (the client's connection ends cleanly, no descriptor is leaked, new
//! connections work once it is back); the destination pod unreachable (503, counted as a
//! connect failure); io_uring refused by seccomp (zring falls back to epoll and says so, or
//! refuses to start when told to use io_uring).
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT, seccomp): without it `Lab::seed` fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const MIB: u64 = 1 << 20;

fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["{APPB}"], protocol: HBONE, node: b, services: {{}} }}
"#
    )
}

fn mesh(env: &[(&str, &str)]) -> Mesh {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    Mesh::start(lab, Path::new(ZRING), &config(), &["a", "b"], env).unwrap()
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn open(m: &Mesh, to: SocketAddr) -> TcpStream {
    let mut s = m
        .lab
        .pod("appa")
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("appa → {to}: {e}\n{}", m.logs()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    s
}

/// Node b's zring dies (SIGKILL) while appa's tunnelled connection is open: appa's connection
/// ends (EOF or reset, never a hang), node a releases every descriptor it held for it and for
/// the dead HBONE connection, and once node b's zring is back, new connections go through.
#[test]
fn peer_zring_killed_mid_transfer_then_recovers() {
    let mut m = mesh(&[]);
    m.echo("appb", 7000).unwrap();
    let a = m.zring("a").pid();
    let baseline = fds(a);
    let mut s = open(&m, (APPB, 7000).into());
    assert!(fds(a) > baseline);
    m.zring("b").kill().unwrap();
    let mut b = [0u8; 4];
    let r = s.write_all(b"ping").and_then(|()| s.read(&mut b));
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "connection outlived the peer: {r:?}"
    );
    drop(s);
    m.eventually_logged("a", "complete dur=", 1).unwrap();
    m.eventually(
        "node a to release the dead connection's descriptors",
        || fds(a) == baseline,
    )
    .unwrap();

    m.start_node("b", &[]).unwrap();
    m.serve("appb", 80, 1).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    let opened = m
        .log("a")
        .matches("new HBONE connection to 10.244.2.4:15008")
        .count();
    assert_eq!(
        opened,
        2,
        "one connection before the kill, one after\n{}",
        m.logs()
    );
}

/// The destination pod refuses (nothing listens) or cannot be reached (its link is down):
/// node b answers 503, node a resets the client and records a connect failure.
#[test]
fn unreachable_destination_gets_503() {
    let m = mesh(&[("ZRING_CONNECT_TIMEOUT_MS", "1000")]);
    let r = m.exchange("appa", (APPB, 81).into(), 16, 16);
    assert!(r.is_err(), "{r:?}");
    m.eventually_logged("a", "CONNECT refused with status 503", 1)
        .unwrap();
    m.eventually_logged("b", "connect to 10.244.2.4:81", 1)
        .unwrap();
    let line = m
        .log("a")
        .lines()
        .find(|l| l.contains("complete dur=") && l.contains("status 503"))
        .map(str::to_owned)
        .unwrap();
    assert!(line.contains(r#"response_flags="CONNECT""#), "{line}");

    let host_if = m.lab.pod("appb").host_if().to_owned();
    m.lab
        .node("b")
        .ip(&["link", "set", &host_if, "down"])
        .unwrap();
    let r = m.exchange("appa", (APPB, 80).into(), 16, 16);
    assert!(r.is_err(), "{r:?}");
    m.eventually_logged("a", "CONNECT refused with status 503", 2)
        .unwrap();
}

/// With io_uring refused by seccomp, `ZRING_DRIVER=auto` falls back to epoll, says why, and
/// carries traffic; `ZRING_DRIVER=uring` refuses to start with a clear error.
#[test]
fn io_uring_unavailable_falls_back_to_epoll() {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    let mut m = Mesh::start(lab, Path::new(ZRING), &config(), &["a"], &[]).unwrap();
    m.lab.redirect(m.lab.node("b")).unwrap();
    m.start_node_without_io_uring("b", &[("ZRING_DRIVER", "auto")])
        .unwrap();
    let log = m.log("b");
    assert!(
        log.contains("io_uring unavailable, falling back to epoll")
            && log.contains(r#"driver="epoll""#),
        "{log}"
    );
    m.serve("appb", 80, 1).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);

    let mut cmd = Command::new(ZRING);
    cmd.env("ZRING_DRIVER", "uring")
        .env("PROXY_MODE", "node")
        .env("NODE_NAME", "c")
        .env("ZRING_DEV_CA_DIR", &m.ca_dir);
    let p = m
        .lab
        .spawn_process_without_io_uring(m.lab.underlay(), cmd)
        .unwrap();
    let status = p.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    assert!(p.log().contains("io_uring unavailable"), "{}", p.log());
}
