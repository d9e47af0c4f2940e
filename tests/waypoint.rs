//! End to end, in network namespaces: a service with a waypoint. zring on appa's node tunnels a
//! connection to the service VIP to the waypoint (`type ToServerWaypoint`), asking for the VIP
//! itself as `:authority`, verifying the waypoint's identity and sending the HBONE metadata
//! headers. The waypoint here is a stand-in written with zring's own HBONE server pieces: it
//! runs in a pod on node c (outside capture, as Istio leaves waypoints), records what it was
//! asked, and echoes the stream.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use zring::core::Driver;
use zring::hbone::{server, tls};
use zring::identity::{CertStore, DevCa, Identity, server_config};
use zring::lab::{Lab, Mesh};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const WAYPOINT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 20);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);

fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadName: appa, canonicalName: appa, canonicalRevision: v1, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
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
- {{ uid: waypoint, name: waypoint, namespace: default, serviceAccount: waypoint, workloadIps: ["{WAYPOINT}"], protocol: HBONE, node: c, services: {{}} }}
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/{VIP}"]
  ports:
    8000: 80
  waypoint:
    destination: "/{WAYPOINT}"
    hboneMtlsPort: 15008
"#
    )
}

/// What the waypoint saw of one CONNECT.
#[derive(Debug)]
struct Seen {
    peer_identity: String,
    authority: String,
    headers: http::HeaderMap,
}

/// The stand-in waypoint: mTLS as `spiffe://cluster.local/ns/default/sa/waypoint` on :15008,
/// answers every CONNECT 200, reports it, and echoes the stream's bytes.
fn waypoint(listener: std::net::TcpListener, store: CertStore, seen: mpsc::Sender<Seen>) {
    let id = Identity::parse("spiffe://cluster.local/ns/default/sa/waypoint").unwrap();
    let config = server_config(&store, &id).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = monoio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (io, peer_identity) = tls::server_handshake(tcp, config.clone(), Driver::Legacy)
                .await
                .unwrap();
            let seen = seen.clone();
            monoio::spawn(async move {
                let on_stream = move |req: http::Request<h2::RecvStream>, respond| {
                    let _ = seen.send(Seen {
                        peer_identity: peer_identity.to_string(),
                        authority: req.uri().to_string(),
                        headers: req.headers().clone(),
                    });
                    monoio::spawn(async move {
                        let mut send = server::respond_ok(respond).unwrap();
                        let mut recv = req.into_body();
                        while let Some(Ok(data)) = poll_fn(|cx| recv.poll_data(cx)).await {
                            // END_STREAM may come on an empty DATA frame.
                            if data.is_empty() {
                                continue;
                            }
                            let _ = recv.flow_control().release_capacity(data.len());
                            send.reserve_capacity(data.len());
                            let _ = poll_fn(|cx| send.poll_capacity(cx)).await;
                            if send.send_data(data, false).is_err() {
                                return;
                            }
                        }
                        let _ = send.send_data(Bytes::new(), true);
                    });
                };
                let _ = server::serve(io, peer, std::future::pending(), on_stream).await;
            });
        }
    });
}

#[test]
fn service_with_a_waypoint_is_tunnelled_to_the_waypoint() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "waypoint", WAYPOINT).unwrap();
    let m = Mesh::start(lab, Path::new(ZRING), &config(), &["a", "b"], &[]).unwrap();
    let ca = DevCa::load_or_create(&m.ca_dir).unwrap();
    let store = CertStore::new(vec![ca.root().clone()])
        .unwrap()
        .with_certs([ca
            .issue(&Identity::parse("spiffe://cluster.local/ns/default/sa/waypoint").unwrap())
            .unwrap()]);
    let listener = m
        .lab
        .pod("waypoint")
        .run(|| std::net::TcpListener::bind("0.0.0.0:15008"))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || waypoint(listener, store, tx));

    let echoed = m.lab.pod("appa").run(|| -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&(VIP, 8000).into(), Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"through the waypoint")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)?;
        Ok(back)
    });
    let echoed = echoed.unwrap_or_else(|e| panic!("appa → VIP: {e}\n{}", m.logs()));
    assert_eq!(echoed, b"through the waypoint");

    let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        seen.authority, "10.96.101.203:8000",
        "the VIP, not an endpoint"
    );
    assert_eq!(
        seen.peer_identity,
        "spiffe://cluster.local/ns/default/sa/appa"
    );
    let header = |name: &str| {
        seen.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", seen.headers))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        header("forwarded").starts_with("for=\"10.244.1.8:"),
        "{}",
        header("forwarded")
    );
    assert!(
        header("baggage").contains("k8s.deployment.name=appa")
            && header("baggage").contains("service.version=v1"),
        "{}",
        header("baggage")
    );
    assert!(zring::hbone::headers::TraceParent::parse(header("traceparent").as_bytes()).is_ok());
    m.eventually_logged(
        "a",
        "proxy to 10.96.101.203:8000 using HBONE via 10.244.3.20:15008 type ToServerWaypoint",
        1,
    )
    .unwrap();
    m.eventually_logged(
        "a",
        r#"dst.identity="spiffe://cluster.local/ns/default/sa/waypoint""#,
        1,
    )
    .unwrap();
    // The waypoint's own traffic to the service is not sent back into itself.
    assert!(!m.log("b").contains("got CONNECT request"));
}
