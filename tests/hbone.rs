//! End to end, in network namespaces: HBONE between real zring processes on two nodes with
//! nftables TPROXY capture, and hostile HBONE clients written here against zring's 15008.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use http::{Method, Request, StatusCode};
use zring::core::Driver;
use zring::hbone::HboneError;
use zring::hbone::client::{Dial, H2Client};
use zring::identity::{CertStore, DevCa, Identity, client_config};
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPA2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const MIB: u64 = 1 << 20;

/// The seed's mesh, plus `appa2` beside `appa`; every workload speaks HBONE. `appb_sa` is the
/// service account appb runs as (the identity its node presents for it).
fn config(appb_sa: &str) -> String {
    format!(
        r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadName: appa
  canonicalName: appa
  canonicalRevision: v1
  workloadIps: ["{APPA}"]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appa2
  name: appa2
  namespace: default
  serviceAccount: appa
  workloadIps: ["{APPA2}"]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: {appb_sa}
  workloadIps: ["{APPB}"]
  protocol: HBONE
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
"#
    )
}

fn mesh(driver: &str, env: &[(&str, &str)]) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    let mut all = vec![("ZRING_DRIVER", driver)];
    all.extend_from_slice(env);
    Mesh::start(lab, Path::new(ZRING), &config("appb"), &["a", "b"], &all).unwrap()
}

zring::on_both_drivers!(cross_node_64mib_both_ways, streams_share_pooled_connections);

/// appa → appb across nodes through 15001 → HBONE → 15008: 64 MiB each way at once,
/// checksummed; appb sees appa's own IP; both nodes log the tunnel and count the same bytes.
fn cross_node_64mib_both_ways(driver: &str) {
    let m = mesh(driver, &[]);
    m.serve("appb", 80, 1).unwrap();
    let r = m.must_exchange("appa", (APPB, 80).into(), 64 * MIB, 64 * MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    assert_eq!((r.uploaded, r.downloaded), (64 * MIB, 64 * MIB));
    m.eventually_logged(
        "a",
        "proxy to 10.244.2.4:80 using HBONE via 10.244.2.4:15008 type ToServer",
        1,
    )
    .unwrap();
    m.eventually_logged("b", "got CONNECT request to 10.244.2.4:80", 1)
        .unwrap();
    // 16 bytes of header up; the payload, then the trailer (digest and peer address) down.
    let up = format!("bytes_sent={}", 64 * MIB + 16);
    for node in ["a", "b"] {
        m.eventually_logged(node, &up, 1).unwrap();
    }
    let a = m.log("a");
    let line = a.lines().find(|l| l.contains(&up)).unwrap();
    assert!(
        line.contains(r#"src.identity="spiffe://cluster.local/ns/default/sa/appa""#)
            && line.contains(r#"dst.identity="spiffe://cluster.local/ns/default/sa/appb""#)
            && line.contains(r#"dst.hbone_addr="10.244.2.4:15008""#)
            && line.contains(r#"response_flags="-""#),
        "{line}"
    );
    let b = m.log("b");
    let line = b.lines().find(|l| l.contains(&up)).unwrap();
    assert!(
        line.contains(r#"direction="inbound""#)
            && line.contains(r#"src.identity="spiffe://cluster.local/ns/default/sa/appa""#)
            && line.contains(r#"src.workload="appa""#),
        "{line}"
    );
}

/// 24 connections held open at once with at most 8 streams per HBONE connection: every
/// stream works, the pool opens between 3 (24 / 8) and 5 (one partly filled connection per
/// core more) connections rather than 24, and once all close, idle release closes them.
fn streams_share_pooled_connections(driver: &str) {
    const N: usize = 24;
    let m = mesh(
        driver,
        &[
            ("POOL_MAX_STREAMS_PER_CONNECTION", "8"),
            ("POOL_UNUSED_RELEASE_TIMEOUT", "500ms"),
        ],
    );
    // appb answers one byte per connection, then waits for the client to close.
    let listener = m
        .lab
        .pod("appb")
        .run(|| TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten().take(N) {
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
                    let _ = s.read(&mut b);
                }
            });
        }
    });
    let barrier = Arc::new(Barrier::new(N));
    let results: Vec<Result<(), String>> = m.lab.pod("appa").run(move || {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let r = (|| {
                        let mut s = std::net::TcpStream::connect_timeout(
                            &(APPB, 80).into(),
                            Duration::from_secs(10),
                        )?;
                        s.write_all(&[i as u8])?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)?;
                        if b[0] != i as u8 {
                            return Err(std::io::Error::other("wrong echo"));
                        }
                        Ok(s)
                    })();
                    // Everyone holds its stream open until all have one.
                    barrier.wait();
                    r.map(drop).map_err(|e| format!("connection {i}: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        r.unwrap_or_else(|e| panic!("{e}\n{}", m.logs()));
    }
    let opened = m
        .log("a")
        .matches("new HBONE connection to 10.244.2.4:15008")
        .count();
    assert!(
        (3..=5).contains(&opened),
        "{opened} HBONE connections for {N} streams\n{}",
        m.logs()
    );
    m.eventually_logged("a", "released idle HBONE connections", 1)
        .unwrap();
}

/// appa → the service VIP: the endpoint is picked on node a and reached over HBONE, the
/// authority being the endpoint's target port.
#[test]
fn service_vip_over_hbone() {
    let m = mesh("uring", &[]);
    m.serve("appb", 80, 1).unwrap();
    let r = m.must_exchange("appa", (VIP, 8000).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged(
        "a",
        "proxy to 10.96.101.203:8000 using HBONE via 10.244.2.4:15008 type ToServer",
        1,
    )
    .unwrap();
    m.eventually_logged("b", "got CONNECT request to 10.244.2.4:80", 1)
        .unwrap();
}

/// appa → appa2 on the same node: direct, even though both speak HBONE; node b sees nothing.
#[test]
fn same_node_is_direct_local() {
    let m = mesh("uring", &[]);
    m.serve("appa2", 8080, 1).unwrap();
    let r = m.must_exchange("appa", (APPA2, 8080).into(), 4 * MIB, 4 * MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged("a", "type DirectLocal", 1).unwrap();
    assert!(!m.log("a").contains("using HBONE"));
    assert!(!m.log("b").contains("complete dur="));
}

/// Node b believes appb runs as `impostor` and presents that identity; node a expects `appb`.
/// The TLS handshake fails on node a, the client's connection is reset, nothing reaches appb.
#[test]
fn server_with_unexpected_identity_is_refused() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    let mut m = Mesh::start(lab, Path::new(ZRING), &config("appb"), &["a"], &[]).unwrap();
    let other = m.lab.dir().join("impostor.yaml");
    std::fs::write(&other, config("impostor")).unwrap();
    m.lab.redirect(m.lab.node("b")).unwrap();
    m.start_node("b", &[("LOCAL_XDS_PATH", other.to_str().unwrap())])
        .unwrap();
    m.serve("appb", 80, 1).unwrap();
    let r = m.exchange("appa", (APPB, 80).into(), 1024, 1024);
    assert!(r.is_err(), "impostor accepted: {r:?}");
    m.eventually_logged("a", "is not one of the expected identities", 1)
        .unwrap();
    m.eventually_logged("a", r#"response_flags="CONNECT""#, 1)
        .unwrap();
    assert!(!m.log("b").contains("got CONNECT request"));
}

/// What a hand-written HBONE client got from zring on node b.
#[derive(Debug)]
enum Outcome {
    Status(StatusCode),
    Failed(String),
}

/// Connects from node a's namespace (not a pod: its traffic is not captured) to
/// `10.244.2.4:15008`, presenting `source` with the certificate in `store`, and asks for
/// `authority` with `method`.
fn hbone_request(
    m: &Mesh,
    store: CertStore,
    source: &str,
    method: Method,
    authority: SocketAddr,
) -> Outcome {
    let source = Identity::parse(source).unwrap();
    m.lab.node("a").run(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let appb = Identity::parse("spiffe://cluster.local/ns/default/sa/appb").unwrap();
            let config = client_config(&store, &source, &[appb]).unwrap();
            let dial = Dial {
                via: SocketAddr::new(IpAddr::V4(APPB), 15008),
                source_ip: None,
                mark: 0,
                timeout: Duration::from_secs(5),
                driver: Driver::Legacy,
            };
            let client = match H2Client::connect(dial, config).await {
                Ok(c) => c,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let mut req = Request::new(());
            *req.method_mut() = method;
            *req.uri_mut() = authority.to_string().parse().unwrap();
            match client.open(req, Duration::from_secs(5)).await {
                Ok(_) => Outcome::Status(StatusCode::OK),
                Err(HboneError::Status(s)) => Outcome::Status(s),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        })
    })
}

/// A store trusting the mesh's root and holding a certificate for `identity` issued by `ca`.
fn store_with(m: &Mesh, ca: &DevCa, identity: &str) -> CertStore {
    let mesh_ca = DevCa::load_or_create(&m.ca_dir).unwrap();
    let cert = ca.issue(&Identity::parse(identity).unwrap()).unwrap();
    CertStore::new(vec![mesh_ca.root().clone()])
        .unwrap()
        .with_certs([cert])
}

/// Hostile and broken HBONE clients against node b's 15008: a certificate from another CA and
/// one from another trust domain fail the TLS handshake; with a good certificate, requests
/// that are not a CONNECT to appb itself get 400, and a CONNECT to a closed port gets 503.
/// The good client's CONNECT to appb:80 gets 200, so the refusals are not an artefact of
/// the test client.
#[test]
fn hostile_hbone_clients_are_refused() {
    let m = mesh("uring", &[]);
    m.serve("appb", 80, 1).unwrap();
    let mesh_ca = DevCa::load_or_create(&m.ca_dir).unwrap();
    let appa = "spiffe://cluster.local/ns/default/sa/appa";
    let target = SocketAddr::from((APPB, 80));

    let good = store_with(&m, &mesh_ca, appa);
    match hbone_request(&m, good, appa, Method::CONNECT, target) {
        Outcome::Status(StatusCode::OK) => {}
        other => panic!("good client: {other:?}\n{}", m.logs()),
    }

    let foreign = DevCa::generate().unwrap();
    let r = hbone_request(
        &m,
        store_with(&m, &foreign, appa),
        appa,
        Method::CONNECT,
        target,
    );
    // TLS 1.3 clients finish first: the server's verdict arrives as an alert on the first read.
    assert!(
        matches!(&r, Outcome::Failed(e) if e.contains("fatal alert: UnknownCA")),
        "foreign CA: {r:?}"
    );
    m.eventually_logged("b", "HBONE TLS handshake failed", 1)
        .unwrap();

    let evil = "spiffe://evil.local/ns/default/sa/appa";
    let r = hbone_request(
        &m,
        store_with(&m, &mesh_ca, evil),
        evil,
        Method::CONNECT,
        target,
    );
    assert!(
        matches!(&r, Outcome::Failed(e) if e.contains("fatal alert")),
        "foreign trust domain: {r:?}"
    );
    m.eventually_logged("b", "HBONE TLS handshake failed", 2)
        .unwrap();
    assert!(
        m.log("b").contains("is not in our trust domain"),
        "{}",
        m.logs()
    );
    // Neither refused connection has an access line; both are counted.
    let refused = m.scrape("b").sum(
        "zring_hbone_connections_refused_total",
        &[("reason", "tls_handshake")],
    );
    assert_eq!(refused, 2.0, "{}", m.logs());

    for (what, method, authority, want) in [
        (
            "another pod's IP",
            Method::CONNECT,
            SocketAddr::from((Ipv4Addr::new(10, 244, 2, 99), 80)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a pod on another node",
            Method::CONNECT,
            SocketAddr::from((APPA, 80)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a closed port",
            Method::CONNECT,
            SocketAddr::from((APPB, 81)),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        match hbone_request(&m, store_with(&m, &mesh_ca, appa), appa, method, authority) {
            Outcome::Status(s) if s == want => {}
            other => panic!("{what}: {other:?}, wanted {want}\n{}", m.logs()),
        }
    }
    assert!(
        m.log("b")
            .contains("target IP is not the connection's destination")
    );
    // The good exchange still works after all that.
    m.serve("appb", 8080, 1).unwrap();
    m.must_exchange("appa", (APPB, 8080).into(), MIB, MIB);
}
