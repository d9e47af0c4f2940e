//! End to end, in network namespaces: zring on two nodes configured only by xDS. A minimal
//! Delta ADS server written here (gRPC framing over h2c, the protobuf types from
//! `zring::xds::proto`) runs in node a's namespace; a workload it adds while zring runs becomes
//! reachable over HBONE without a restart, one it removes stops being reachable, and when the
//! server goes away zring keeps serving its last snapshot.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost_types::Any;
use zring::lab::{Lab, Mesh};
use zring::xds::proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use zring::xds::proto::{ADDRESS_TYPE, AUTHORIZATION_TYPE, workload as pw};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const MIB: u64 = 1 << 20;
const ADS_PORT: u16 = 15010;

fn workload(name: &str, ip: Ipv4Addr, node: &str) -> Resource {
    let w = pw::Workload {
        uid: format!("Kubernetes//Pod/default/{name}"),
        name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
        addresses: vec![ip.octets().to_vec()],
        node: node.into(),
        tunnel_protocol: pw::TunnelProtocol::Hbone as i32,
        ..Default::default()
    };
    Resource {
        name: w.uid.clone(),
        version: "1".into(),
        resource: Some(Any {
            type_url: ADDRESS_TYPE.into(),
            value: pw::Address {
                r#type: Some(pw::address::Type::Workload(w)),
            }
            .encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// What the fake istiod serves: the current Address resources, and a generation that every
/// change bumps so connected streams know to push.
#[derive(Default)]
struct State {
    resources: Mutex<Vec<Resource>>,
    generation: AtomicU64,
}

impl State {
    fn set(&self, resources: Vec<Resource>) {
        *self.resources.lock().unwrap() = resources;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// One gRPC message: a 0 (uncompressed) byte, the big-endian length, the protobuf.
fn grpc_frame(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

/// Serves Delta ADS to every client: on connect and after every change, the full set of
/// Address resources (removing what is gone) and an empty Authorization response. When `stop`
/// fires, the server goes away: listener, connections and streams are dropped at once.
fn serve_ads(listener: TcpListener, state: Arc<State>, stop: tokio::sync::oneshot::Receiver<()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let accept_loop = async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let state = state.clone();
                    tokio::spawn(ads_stream(req, respond, state));
                }
            });
        }
    };
    rt.block_on(async move {
        tokio::select! {
            () = accept_loop => {}
            _ = stop => {}
        }
    });
    // Dropping the runtime drops every connection task with it.
    drop(rt);
}

async fn ads_stream(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    state: Arc<State>,
) {
    assert!(
        req.uri()
            .path()
            .ends_with("AggregatedDiscoveryService/DeltaAggregatedResources"),
        "unexpected call {}",
        req.uri()
    );
    let response = http::Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(response, false).unwrap();
    // Read (and decode, to prove the client speaks Delta ADS) requests in the background.
    let mut body = req.into_body();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                buf.advance(5);
                let msg = buf.split_to(len);
                DeltaDiscoveryRequest::decode(msg).expect("a Delta ADS request");
            }
        }
    });
    let mut sent: Vec<String> = Vec::new();
    let mut seen = u64::MAX;
    let mut nonce = 0u64;
    loop {
        let generation = state.generation.load(Ordering::SeqCst);
        if generation != seen {
            seen = generation;
            let resources = state.resources.lock().unwrap().clone();
            let names: Vec<String> = resources.iter().map(|r| r.name.clone()).collect();
            let removed = sent
                .iter()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect();
            sent = names;
            nonce += 1;
            let address = DeltaDiscoveryResponse {
                type_url: ADDRESS_TYPE.into(),
                nonce: format!("a{nonce}"),
                resources,
                removed_resources: removed,
                ..Default::default()
            };
            let authorization = DeltaDiscoveryResponse {
                type_url: AUTHORIZATION_TYPE.into(),
                nonce: format!("p{nonce}"),
                ..Default::default()
            };
            for m in [address, authorization] {
                if send.send_data(grpc_frame(&m), false).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn workloads_added_and_removed_over_xds_take_effect_without_restart() {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    let state = Arc::new(State::default());
    state.set(vec![workload("appa", APPA, "a")]);
    let listener = lab
        .node("a")
        .run(|| TcpListener::bind(("0.0.0.0", ADS_PORT)))
        .unwrap();
    let served = state.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let server = std::thread::spawn(move || serve_ads(listener, served, stopped));
    let xds = format!("http://{}:{ADS_PORT}", lab.node("a").underlay_ip());
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        "",
        &["a", "b"],
        &[("XDS_ADDRESS", &xds)],
    )
    .unwrap();
    for node in ["a", "b"] {
        m.eventually_logged(node, "published snapshot workloads=1", 1)
            .unwrap();
    }
    m.serve("appb", 80, 64).unwrap();
    // appb is unknown: node a passes the connection through as plain TCP, and node b, which
    // captures only the pods it has enrolled, leaves it alone.
    m.must_exchange("appa", (APPB, 80).into(), 1024, 1024);
    m.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Passthrough", 1)
        .unwrap();

    state.set(vec![
        workload("appa", APPA, "a"),
        workload("appb", APPB, "b"),
    ]);
    for node in ["a", "b"] {
        m.eventually_logged(node, "published snapshot workloads=2", 1)
            .unwrap();
    }
    // Node b captures appb (so its 15008 answers) once appb is in its capture set.
    m.eventually_logged("b", "capture set ztunnel-pods-ips updated pods=1", 1)
        .unwrap();
    let r = m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    assert_eq!(r.peer_seen_by_server.ip(), APPA);
    m.eventually_logged("a", "using HBONE via 10.244.2.4:15008", 1)
        .unwrap();

    state.set(vec![workload("appa", APPA, "a")]);
    for node in ["a", "b"] {
        m.eventually_logged(node, "published snapshot workloads=1", 2)
            .unwrap();
    }
    // appb is gone: passed through again, no longer over HBONE, once node b has also taken it
    // out of its capture set (until then its inbound refuses the unknown destination).
    zring::lab::mesh::eventually("appa -> appb passed through", || {
        m.exchange("appa", (APPB, 80).into(), 1024, 1024)
    });
    m.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Passthrough", 2)
        .unwrap();

    // istiod goes away: both nodes notice, keep their last snapshot, and keep serving it.
    state.set(vec![
        workload("appa", APPA, "a"),
        workload("appb", APPB, "b"),
    ]);
    for node in ["a", "b"] {
        m.eventually_logged(node, "published snapshot workloads=2", 2)
            .unwrap();
    }
    m.eventually_logged("b", "capture set ztunnel-pods-ips updated pods=1", 2)
        .unwrap();
    stop.send(()).unwrap();
    server.join().unwrap();
    for node in ["a", "b"] {
        m.eventually_logged(node, "xDS stream", 2).unwrap();
    }
    m.serve("appb", 81, 1).unwrap();
    m.must_exchange("appa", (APPB, 81).into(), MIB, MIB);
}
