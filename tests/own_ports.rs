//! End to end, in network namespaces (node mode): zring's port numbers are zring only where
//! zring listens. From appa, captured on node a: node b's metrics (`172.31.0.12:15020`) answer
//! 200; an HBONE (mTLS) connection to a remote pod's `:15008` goes through, to a mesh workload
//! (tunnelled by zring a to zring b, then to the pod) and to a pod outside the mesh
//! (passthrough); while node a's own addresses on zring's ports are refused by zring a.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::future::poll_fn;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use http::{Method, Request};
use zring::core::Driver;
use zring::hbone::client::{Dial, H2Client};
use zring::hbone::{server, tls};
use zring::identity::{CertStore, DevCa, Identity, client_config, server_config};
use zring::lab::{Lab, Mesh, http as lab_http};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// A pod on node b outside the mesh (not in the config, so not captured): a gateway's place.
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
const NODE_A: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 11);
const NODE_A_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 12);
const APPA_ID: &str = "spiffe://cluster.local/ns/default/sa/appa";
/// The identity the stand-in HBONE servers present.
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/gateway";

fn config() -> String {
    format!(
        r#"
workloads:
- {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["{APPA}"], protocol: HBONE, node: a, services: {{}} }}
- {{ uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["{APPB}"], protocol: HBONE, node: b, services: {{}} }}
"#
    )
}

/// A stand-in HBONE server on a pod's :15008: mTLS as [`SERVER_ID`], answers every CONNECT 200
/// and reports the authority asked for with the client's proven identity.
fn hbone_server(
    listener: std::net::TcpListener,
    store: CertStore,
    seen: mpsc::Sender<(String, String)>,
) {
    let config = server_config(&store, &Identity::parse(SERVER_ID).unwrap()).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = monoio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let Ok((io, peer_identity)) =
                tls::server_handshake(tcp, config.clone(), Driver::Legacy).await
            else {
                continue;
            };
            let seen = seen.clone();
            monoio::spawn(async move {
                let on_stream = move |req: http::Request<h2::RecvStream>, respond| {
                    let _ = seen.send((peer_identity.to_string(), req.uri().to_string()));
                    monoio::spawn(async move {
                        let _send = server::respond_ok(respond).unwrap();
                        // Held until the client ends the stream.
                        let mut recv = req.into_body();
                        while let Some(Ok(_)) = poll_fn(|cx| recv.poll_data(cx)).await {}
                    });
                };
                let _ = server::serve(io, peer, std::future::pending(), on_stream).await;
            });
        }
    });
}

/// From appa: an HBONE connection (mTLS as appa, expecting [`SERVER_ID`]) to `via`, asking
/// for `authority`. `Ok` once the CONNECT got its 200.
fn hbone_from_appa(
    m: &Mesh,
    store: CertStore,
    via: SocketAddr,
    authority: SocketAddr,
) -> Result<(), String> {
    m.lab.pod("appa").run(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let source = Identity::parse(APPA_ID).unwrap();
            let expected = Identity::parse(SERVER_ID).unwrap();
            let config = client_config(&store, &source, &[expected]).unwrap();
            let dial = Dial {
                via,
                source_ip: None,
                mark: 0,
                timeout: Duration::from_secs(5),
                driver: Driver::Legacy,
            };
            let client = H2Client::connect(dial, config)
                .await
                .map_err(|e| format!("connect {via}: {e}"))?;
            let mut req = Request::new(());
            *req.method_mut() = Method::CONNECT;
            *req.uri_mut() = authority.to_string().parse().unwrap();
            client
                .open(req, Duration::from_secs(5))
                .await
                .map(drop)
                .map_err(|e| format!("CONNECT {authority} via {via}: {e}"))
        })
    })
}

#[test]
fn own_port_numbers_elsewhere_are_ordinary_traffic() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("b", "gw", GW).unwrap();
    let m = Mesh::start(lab, Path::new(ZRING), &config(), &["a", "b"], &[]).unwrap();

    // Node b's metrics, scraped from a captured pod on node a: zring a passes it through.
    let scrape = m
        .lab
        .pod("appa")
        .run(|| lab_http::get((NODE_B, 15020).into(), "/metrics"))
        .unwrap_or_else(|e| panic!("appa → node b :15020: {e}\n{}", m.logs()));
    assert_eq!(scrape.status, 200, "{scrape:?}");
    assert!(
        scrape.body.contains("# TYPE "),
        "not zring's metrics: {}",
        scrape.body
    );
    m.eventually_logged(
        "a",
        "proxy to 172.31.0.12:15020 using TCP type Passthrough",
        1,
    )
    .unwrap();

    // HBONE to a remote pod's 15008, to a mesh workload and to a pod outside the mesh.
    let ca = DevCa::load_or_create(&m.ca_dir).unwrap();
    let store = |id: &str| {
        CertStore::new(vec![ca.root().clone()])
            .unwrap()
            .with_certs([ca.issue(&Identity::parse(id).unwrap()).unwrap()])
    };
    let (tx, seen) = mpsc::channel();
    for pod in ["appb", "gw"] {
        let listener = m
            .lab
            .pod(pod)
            .run(|| std::net::TcpListener::bind("0.0.0.0:15008"))
            .unwrap();
        let (server_store, tx) = (store(SERVER_ID), tx.clone());
        std::thread::spawn(move || hbone_server(listener, server_store, tx));
    }
    for (pod, ip) in [("appb", APPB), ("gw", GW)] {
        let via = SocketAddr::from((ip, 15008));
        let authority = SocketAddr::from((ip, 8080));
        hbone_from_appa(&m, store(APPA_ID), via, authority)
            .unwrap_or_else(|e| panic!("appa → {pod} :15008: {e}\n{}", m.logs()));
        let (peer, asked) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((peer.as_str(), asked), (APPA_ID, authority.to_string()));
    }
    // appb is a mesh workload: zring a tunnels to zring b, which connects to appb's 15008.
    m.eventually_logged(
        "a",
        "proxy to 10.244.2.4:15008 using HBONE via 10.244.2.4:15008 type ToServer",
        1,
    )
    .unwrap();
    m.eventually_logged("b", "got CONNECT request to 10.244.2.4:15008", 1)
        .unwrap();
    // gw is outside the mesh: passed through.
    m.eventually_logged(
        "a",
        "proxy to 10.244.2.9:15008 using TCP type Passthrough",
        1,
    )
    .unwrap();

    // Node a's own addresses on zring's ports are zring itself: refused by zring a, even
    // 15020 and 15021, which listen on every address (uncaptured, they would answer).
    for (ip, port) in [
        (NODE_A, 15000),
        (NODE_A, 15020),
        (NODE_A_GATEWAY, 15021),
        (NODE_A, 15008),
    ] {
        let dst = SocketAddr::from((ip, port));
        let r = m.lab.pod("appa").run(move || lab_http::get(dst, "/"));
        assert!(r.is_err(), "appa → {dst} answered: {r:?}");
        m.eventually_logged("a", &format!("destination {dst} is zring itself"), 1)
            .unwrap();
    }
}
