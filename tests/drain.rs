//! End to end, in network namespaces: graceful drain on SIGTERM. Connections in flight finish
//! intact (through an HBONE connection that got GOAWAY), new connections are refused at once,
//! and the process exits 0 when the last connection ends or when the deadline passes.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use zring::lab::traffic::Pattern;
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const CHUNK: usize = 256 * 1024;

fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["{APPB}"], protocol: HBONE, node: b, services: {{}} }}
"#
    )
}

fn mesh(deadline: &str) -> Mesh {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[("ZRING_DRAIN_DEADLINE", deadline)],
    )
    .unwrap()
}

fn connect(m: &Mesh, to: SocketAddr) -> std::io::Result<TcpStream> {
    m.lab
        .pod("appa")
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
}

/// Sends one patterned chunk and checks it comes back unchanged.
fn round_trip(s: &mut TcpStream, pattern: &mut Pattern) -> std::io::Result<()> {
    let mut out = vec![0u8; CHUNK];
    pattern.fill(&mut out);
    let mut back = vec![0u8; CHUNK];
    let writer = {
        let mut w = s.try_clone()?;
        let out = out.clone();
        std::thread::spawn(move || w.write_all(&out))
    };
    s.read_exact(&mut back)?;
    writer.join().expect("writer thread")?;
    if back != out {
        return Err(std::io::Error::other("echoed bytes differ"));
    }
    Ok(())
}

/// A connection through both nodes is mid-transfer when both zrings get SIGTERM: it completes
/// intact; meanwhile a new connection is refused; both processes exit 0 once it closes,
/// before their (long) deadline, saying they drained.
#[test]
fn in_flight_transfer_completes_and_new_connections_are_refused() {
    let m = mesh("60s");
    m.echo("appb", 7000).unwrap();
    let mut s = connect(&m, (APPB, 7000).into()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pattern = Pattern::new(42);
    for _ in 0..4 {
        round_trip(&mut s, &mut pattern).unwrap();
    }
    for node in ["b", "a"] {
        m.zring(node).signal(libc::SIGTERM).unwrap();
        m.eventually_logged(node, "draining: closing listeners", 2)
            .unwrap();
    }
    // Node a's listeners are closed: the capture rules reset new connections.
    let refused = connect(&m, (APPB, 7000).into());
    assert!(
        refused.is_err(),
        "a new connection got through: {refused:?}"
    );
    // Node b sent GOAWAY on the HBONE connection, whose stream keeps flowing.
    for _ in 0..16 {
        round_trip(&mut s, &mut pattern).unwrap_or_else(|e| panic!("{e}\n{}", m.logs()));
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(s);
    for node in ["a", "b"] {
        let status = m.zring(node).wait_exit(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "node {node}: {status:?}\n{}", m.logs());
        assert!(
            m.log(node).contains("drained: every connection finished"),
            "{}",
            m.logs()
        );
    }
}

/// A connection that never ends holds the drain until the deadline; then zring exits 0 and
/// the connection is cut.
#[test]
fn drain_deadline_cuts_idle_connections_and_exits() {
    let m = mesh("1500ms");
    m.echo("appb", 7000).unwrap();
    let mut s = connect(&m, (APPB, 7000).into()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    round_trip(&mut s, &mut Pattern::new(7)).unwrap();
    m.zring("a").signal(libc::SIGTERM).unwrap();
    let status = m.zring("a").wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}\n{}", m.logs());
    m.eventually_logged("a", "drain deadline reached", 1)
        .unwrap();
    // The client's connection died with node a's zring.
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "connection survived: {r:?}");
    // Node b was not draining: it keeps serving.
    assert!(m.zring("b").try_status().unwrap().is_none());
}
