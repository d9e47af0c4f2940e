//! End to end, in network namespaces: zring on two nodes configured only by xDS. A minimal
//! Delta ADS server written here (gRPC framing over h2c, the protobuf types from
//! `zring::xds::proto`) runs in node a's namespace; a workload it adds while zring runs becomes
//! reachable over HBONE without a restart, one it removes stops being reachable, and when the
//! server goes away zring keeps serving its last snapshot. The shapes istiod sends that zring
//! once NACKed (hostname workloads, headless and CIDR services, shared VIPs and IPs,
//! PASSTHROUGH) are ACKed and route or are refused per connection.
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
use zring::lab::mesh::listening_ports;
use zring::lab::{Lab, Mesh, NodeProxy, Ready};
use zring::xds::proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use zring::xds::proto::{ADDRESS_TYPE, AUTHORIZATION_TYPE, security as psec, workload as pw};

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

/// A namespace-wide ALLOW policy without rules: Istio's "allow nothing" for `namespace`.
fn allow_nothing(namespace: &str) -> Resource {
    let p = psec::Authorization {
        name: "allow-nothing".into(),
        namespace: namespace.into(),
        scope: psec::Scope::Namespace as i32,
        action: psec::Action::Allow as i32,
        ..Default::default()
    };
    Resource {
        name: format!("{namespace}/allow-nothing"),
        version: "1".into(),
        resource: Some(Any {
            type_url: AUTHORIZATION_TYPE.into(),
            value: p.encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// What the fake istiod serves: the current Address and Authorization resources, and a
/// generation that every change bumps so connected streams know to push.
struct State {
    resources: Mutex<Vec<Resource>>,
    /// `None`: the server withholds the Authorization type (sends no response for it).
    policies: Mutex<Option<Vec<Resource>>>,
    generation: AtomicU64,
}

impl Default for State {
    fn default() -> State {
        State {
            resources: Mutex::default(),
            policies: Mutex::new(Some(Vec::new())),
            generation: AtomicU64::default(),
        }
    }
}

impl State {
    fn set(&self, resources: Vec<Resource>) {
        *self.resources.lock().unwrap() = resources;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn set_policies(&self, policies: Option<Vec<Resource>>) {
        *self.policies.lock().unwrap() = policies;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// The names in `now`, and those of `before` no longer in it.
fn delta(before: &mut Vec<String>, now: &[Resource]) -> Vec<String> {
    let names: Vec<String> = now.iter().map(|r| r.name.clone()).collect();
    let removed = before
        .iter()
        .filter(|n| !names.contains(n))
        .cloned()
        .collect();
    *before = names;
    removed
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
/// Address resources (removing what is gone) and of Authorization resources (unless withheld). When `stop`
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
    let (mut sent, mut sent_policies) = (Vec::new(), Vec::new());
    let mut seen = u64::MAX;
    let mut nonce = 0u64;
    loop {
        let generation = state.generation.load(Ordering::SeqCst);
        if generation != seen {
            seen = generation;
            let resources = state.resources.lock().unwrap().clone();
            let removed = delta(&mut sent, &resources);
            nonce += 1;
            let mut responses = vec![DeltaDiscoveryResponse {
                type_url: ADDRESS_TYPE.into(),
                nonce: format!("a{nonce}"),
                resources,
                removed_resources: removed,
                ..Default::default()
            }];
            if let Some(policies) = state.policies.lock().unwrap().clone() {
                let removed = delta(&mut sent_policies, &policies);
                responses.push(DeltaDiscoveryResponse {
                    type_url: AUTHORIZATION_TYPE.into(),
                    nonce: format!("p{nonce}"),
                    resources: policies,
                    removed_resources: removed,
                    ..Default::default()
                });
            }
            for m in responses {
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

const APPA2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);

/// Starts the fake istiod in node `node`'s namespace on `port`; dropping the sender stops it.
fn start_ads(
    lab: &Lab,
    node: &str,
    port: u16,
    state: Arc<State>,
) -> tokio::sync::oneshot::Sender<()> {
    let listener = lab
        .node(node)
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || serve_ads(listener, state, stopped));
    stop
}

/// How a connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// Refused or reset: nobody took it, or zring denied it.
    Refused,
    /// Still open after a second: something let it through.
    Open,
}

/// From `pod`, connects to `to` and waits up to a second for the connection to be refused or
/// reset. The server at `to` never writes, so only a denial ends the connection that soon.
fn attempt(lab: &Lab, pod: &str, to: std::net::SocketAddr) -> Attempt {
    use std::io::Read;
    lab.pod(pod).run(move || {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
            return Attempt::Refused;
        };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        match s.read(&mut [0u8; 16]) {
            Ok(0) => Attempt::Refused,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Attempt::Open
            }
            _ => Attempt::Refused,
        }
    })
}

/// Nothing ever reached `listener`: no connection waits in its accept queue.
fn assert_never_reached(listener: &TcpListener, logs: &str) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection reached appa: {other:?}\n{logs}"),
    }
}

fn readiness(lab: &Lab, node: &str) -> u16 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 15021));
    lab.node(node)
        .run(move || zring::lab::http::get(addr, "/healthz/ready"))
        .unwrap()
        .status
}

/// zring configured by xDS, with the addresses delivered and the authorizations withheld: the
/// listeners are not bound (the capture rule refuses what arrives), readiness answers 503, the
/// log says what is missing. Once a namespace-wide allow-nothing policy arrives, zring binds,
/// gets ready, and the connection the policy denies is denied: none ever reaches appa.
#[test]
fn listeners_bind_only_after_addresses_and_authorizations() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    let state = Arc::new(State::default());
    state.set(vec![
        workload("appa", APPA, "a"),
        workload("appa2", APPA2, "a"),
    ]);
    state.set_policies(None);
    let _ads = start_ads(&lab, "a", ADS_PORT, state.clone());
    let xds = format!("http://{}:{ADS_PORT}", lab.node("a").underlay_ip());
    let waiting = NodeProxy {
        ready: Ready::Logged("not serving yet".into()),
        ..NodeProxy::zring(Path::new(ZRING))
    };
    let m = Mesh::start_proxy(lab, waiting, "", &["a"], &[("XDS_ADDRESS", &xds)]).unwrap();
    m.eventually_logged("a", "published snapshot workloads=2", 1)
        .unwrap();
    // The pods are captured from the first addresses on: refused, not let through.
    m.eventually_logged("a", "capture set ztunnel-pods-ips updated pods=2", 1)
        .unwrap();
    let appa = m
        .lab
        .pod("appa")
        .run(|| TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    let pid = m.zring("a").pid();

    let log = m.log("a");
    let waiting_line = log.lines().find(|l| l.contains("not serving yet")).unwrap();
    assert!(
        waiting_line.contains("authorizations (istio.security.Authorization)"),
        "{waiting_line}"
    );
    let open = listening_ports(pid);
    assert!(open.contains(&15021) && open.contains(&15020), "{open:?}");
    for port in [15001, 15006, 15008] {
        assert!(
            !open.contains(&port),
            "{port} bound before policies: {open:?}"
        );
    }
    assert_eq!(readiness(&m.lab, "a"), 503);
    assert!(!log.contains("zring ready"), "{log}");
    assert_eq!(
        attempt(&m.lab, "appa2", (APPA, 80).into()),
        Attempt::Refused
    );

    state.set_policies(Some(vec![allow_nothing("default")]));
    m.eventually_logged("a", "zring ready", 1).unwrap();
    assert!(m.log("a").contains("policies=1"));
    let open = listening_ports(pid);
    for port in [15001, 15006, 15008] {
        assert!(
            open.contains(&port),
            "{port} not bound once ready: {open:?}"
        );
    }
    assert_eq!(readiness(&m.lab, "a"), 200);
    for _ in 0..5 {
        assert_eq!(
            attempt(&m.lab, "appa2", (APPA, 80).into()),
            Attempt::Refused
        );
    }
    m.eventually_logged("a", "no ALLOW policy matched", 5)
        .unwrap();
    assert_never_reached(&appa, &m.logs());
}

/// A rolling update on node a: the old zring serves with a namespace-wide allow-nothing
/// policy; a new zring starts beside it on the same ports (SO_REUSEPORT) while its istiod has
/// sent addresses but no authorizations. It binds nothing, so every connection meanwhile goes
/// to the old process and is denied. Once its policies arrive the new one binds; connections
/// are split between the two and all denied; with the old one gone the new one denies them
/// itself. None ever reaches appa. Finally the policy is withdrawn and a connection goes
/// through the new process, so the denials were the policy's.
#[test]
fn rolling_update_never_serves_without_policies() {
    const NEW_ADS_PORT: u16 = ADS_PORT + 1;
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("a", "appa2", APPA2).unwrap();
    let addresses = vec![workload("appa", APPA, "a"), workload("appa2", APPA2, "a")];
    let old_state = Arc::new(State::default());
    old_state.set(addresses.clone());
    old_state.set_policies(Some(vec![allow_nothing("default")]));
    let new_state = Arc::new(State::default());
    new_state.set(addresses);
    new_state.set_policies(None);
    let _old_ads = start_ads(&lab, "a", ADS_PORT, old_state);
    let _new_ads = start_ads(&lab, "a", NEW_ADS_PORT, new_state.clone());
    let underlay = lab.node("a").underlay_ip();
    let xds = format!("http://{underlay}:{ADS_PORT}");
    let m = Mesh::start(lab, Path::new(ZRING), "", &["a"], &[("XDS_ADDRESS", &xds)]).unwrap();
    m.eventually_logged("a", "policies=1", 1).unwrap();
    let appa = m
        .lab
        .pod("appa")
        .run(|| TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    let to_appa = std::net::SocketAddr::from((APPA, 80));
    for _ in 0..3 {
        assert_eq!(attempt(&m.lab, "appa2", to_appa), Attempt::Refused);
    }

    // The new process, as the mesh would start it, from its own istiod.
    let mut cmd = std::process::Command::new(ZRING);
    cmd.arg("run")
        .env("NODE_NAME", "a")
        .env("PROXY_MODE", "node")
        .env("ZRING_DEV_CA_DIR", &m.ca_dir)
        .env("XDS_ADDRESS", format!("http://{underlay}:{NEW_ADS_PORT}"))
        .env("CA_ADDRESS", "")
        .env("ZRING_CORES", "2")
        .env("RUST_LOG", "info");
    let new = m.lab.spawn_process(m.lab.node("a"), cmd).unwrap();
    new.wait_for_log("not serving yet", Duration::from_secs(30))
        .unwrap();
    new.wait_for_log("published snapshot workloads=2", Duration::from_secs(30))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(attempt(&m.lab, "appa2", to_appa), Attempt::Refused);
    }
    let log = new.log();
    assert!(
        !log.contains("core listening") && !log.contains("zring ready") && !log.contains("access"),
        "the new process served before its policies:\n{log}"
    );

    new_state.set_policies(Some(vec![allow_nothing("default")]));
    new.wait_for_log("zring ready", Duration::from_secs(30))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(attempt(&m.lab, "appa2", to_appa), Attempt::Refused);
    }
    m.zring("a").kill().unwrap();
    for _ in 0..5 {
        assert_eq!(attempt(&m.lab, "appa2", to_appa), Attempt::Refused);
    }
    assert!(
        new.log().matches("no ALLOW policy matched").count() >= 5,
        "{}",
        new.log()
    );
    assert_never_reached(&appa, &format!("{}\n--- new:\n{}", m.logs(), new.log()));

    new_state.set_policies(Some(Vec::new()));
    new.wait_for_log(
        "removed=1 rejected=0 workloads=2 services=0 policies=0",
        Duration::from_secs(30),
    )
    .unwrap();
    m.serve("appa", 81, 1).unwrap();
    m.exchange("appa2", (APPA, 81).into(), 1024, 1024)
        .unwrap_or_else(|e| panic!("appa2 → appa:81 through the new zring: {e}\n{}", new.log()));
}

/// An istiod-encoded Address resource of a workload.
fn address(w: pw::Workload) -> Resource {
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

/// An istiod-encoded Address resource of a service (named `namespace/hostname`).
fn service_address(s: pw::Service) -> Resource {
    Resource {
        name: format!("{}/{}", s.namespace, s.hostname),
        version: "1".into(),
        resource: Some(Any {
            type_url: ADDRESS_TYPE.into(),
            value: pw::Address {
                r#type: Some(pw::address::Type::Service(s)),
            }
            .encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// A plain TCP pod of `namespace` on `node`, endpoint of `services` (keys `ns/hostname`).
fn tcp_pod(
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
    network: &str,
    node: &str,
    services: &[&str],
) -> pw::Workload {
    pw::Workload {
        uid: format!("Kubernetes//Pod/{ns}/{name}"),
        name: name.into(),
        namespace: ns.into(),
        service_account: name.into(),
        addresses: vec![ip.octets().to_vec()],
        network: network.into(),
        node: node.into(),
        services: services
            .iter()
            .map(|k| (k.to_string(), pw::PortList::default()))
            .collect(),
        ..Default::default()
    }
}

fn vip(ip: [u8; 4], length: Option<u32>) -> pw::NetworkAddress {
    pw::NetworkAddress {
        network: String::new(),
        address: ip.to_vec(),
        length,
    }
}

fn svc(
    ns: &str,
    name: &str,
    host: &str,
    vips: Vec<pw::NetworkAddress>,
    port: (u32, u32),
) -> pw::Service {
    pw::Service {
        name: name.into(),
        namespace: ns.into(),
        hostname: host.into(),
        addresses: vips,
        ports: vec![pw::Port {
            service_port: port.0,
            target_port: port.1,
        }],
        ..Default::default()
    }
}

/// What istiod sends and zring once NACKed, served over Delta ADS to a running zring: every
/// response is ACKed (no resource rejected), and connections route or are refused one by one:
/// a ServiceEntry resolved by DNS (its endpoint a hostname, whose name does not resolve here:
/// no DNS server at the upstream named) → reset, `DNS_FAILED`; two
/// services on one VIP → the client's namespace's; `PASSTHROUGH` and a CIDR VIP (prefix
/// length 24 in `NetworkAddress.length`) → the original destination; appb's IP also claimed
/// on another network (HBONE there) → appb directly; a headless service → its pod by IP.
#[test]
fn istiod_shapes_over_xds_are_acked_and_route_per_connection() {
    const APPO: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
    const EXT: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 7);
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.capture_every_pod_address();
    lab.add_pod("a", "appo", APPO).unwrap();
    lab.add_node(
        "c",
        Ipv4Addr::new(172, 31, 0, 13),
        "10.244.3.0/24".parse().unwrap(),
    )
    .unwrap();
    lab.add_pod("c", "ext", EXT).unwrap();
    // In no workload and on no single VIP: only the CIDR VIP covers it.
    const EXT2: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 8);
    lab.add_pod("c", "ext2", EXT2).unwrap();

    let mut db = pw::Workload {
        uid: "Kubernetes/networking.istio.io/ServiceEntry/default/db/db.example.com".into(),
        name: "db".into(),
        namespace: "default".into(),
        hostname: "db.example.com".into(),
        ..Default::default()
    };
    db.services
        .insert("default/db.example.com".into(), pw::PortList::default());
    let mut twin = tcp_pod("default", "appb-twin", APPB, "net2", "z", &[]);
    twin.tunnel_protocol = pw::TunnelProtocol::Hbone as i32;
    let passthrough = Some(pw::LoadBalancing {
        mode: pw::load_balancing::Mode::Passthrough as i32,
        ..Default::default()
    });
    let mut ext_svc = svc(
        "default",
        "ext",
        "ext.example.com",
        vec![vip(EXT.octets(), Some(32))],
        (9000, 9000),
    );
    ext_svc.load_balancing = passthrough.clone();
    let mut range = svc(
        "default",
        "range",
        "range.example.com",
        vec![vip([10, 244, 3, 0], Some(24))],
        (9001, 9001),
    );
    range.load_balancing = passthrough;
    let resources = vec![
        address(tcp_pod("default", "appa", APPA, "", "a", &[])),
        address(tcp_pod("other", "appo", APPO, "", "a", &[])),
        address(tcp_pod(
            "default",
            "appb",
            APPB,
            "",
            "b",
            &[
                "default/shared.default.svc.cluster.local",
                "default/hl.default.svc.cluster.local",
            ],
        )),
        address(twin),
        address(tcp_pod(
            "default",
            "ext",
            EXT,
            "",
            "c",
            &["other/shared.other.svc.cluster.local"],
        )),
        address(db),
        service_address(svc(
            "default",
            "db",
            "db.example.com",
            vec![vip([240, 240, 0, 1], None)],
            (5432, 5432),
        )),
        service_address(svc(
            "default",
            "hl",
            "hl.default.svc.cluster.local",
            vec![],
            (80, 80),
        )),
        service_address(svc(
            "default",
            "shared",
            "shared.default.svc.cluster.local",
            vec![vip([10, 96, 5, 5], None)],
            (80, 80),
        )),
        service_address(svc(
            "other",
            "shared",
            "shared.other.svc.cluster.local",
            vec![vip([10, 96, 5, 5], None)],
            (80, 9000),
        )),
        service_address(ext_svc),
        service_address(range),
    ];
    let state = Arc::new(State::default());
    state.set(resources);
    let _stop = start_ads(&lab, "a", ADS_PORT, state);
    let xds = format!("http://{}:{ADS_PORT}", lab.node("a").underlay_ip());
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        "",
        &["a", "b"],
        &[
            ("XDS_ADDRESS", &xds),
            // Nothing listens there: hostname endpoints do not resolve.
            ("ZRING_DNS_UPSTREAMS", &format!("{EXT2}:53")),
        ],
    )
    .unwrap();
    for node in ["a", "b"] {
        m.eventually_logged(node, "published snapshot workloads=6", 1)
            .unwrap();
    }
    // Every response ACKed: nothing rejected.
    let scrape = m.scrape("a");
    assert!(scrape.sum("zring_xds_responses_total", &[("result", "ack")]) >= 2.0);
    assert_eq!(
        scrape.sum("zring_xds_responses_total", &[("result", "nack")]),
        0.0
    );
    assert_eq!(scrape.sum("zring_xds_rejected_resources_total", &[]), 0.0);

    m.serve("appb", 80, 3).unwrap();
    m.serve("ext", 9000, 2).unwrap();
    m.serve("ext2", 9001, 1).unwrap();
    assert!(
        m.exchange("appa", (Ipv4Addr::new(240, 240, 0, 1), 5432).into(), 1, 1)
            .is_err()
    );
    m.eventually_logged("a", "response_flags=\"DNS_FAILED\"", 1)
        .unwrap();
    let vip = (Ipv4Addr::new(10, 96, 5, 5), 80).into();
    assert_eq!(
        m.must_exchange("appa", vip, MIB, MIB)
            .peer_seen_by_server
            .ip(),
        APPA
    );
    m.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 1)
        .unwrap();
    assert_eq!(
        m.must_exchange("appo", vip, MIB, MIB)
            .peer_seen_by_server
            .ip(),
        APPO
    );
    m.eventually_logged("a", "proxy to 10.244.3.7:9000 using TCP type Direct", 1)
        .unwrap();
    m.must_exchange("appa", (EXT, 9000).into(), MIB, MIB);
    m.eventually_logged("a", "dst.service=\"ext.example.com\"", 1)
        .unwrap();
    m.must_exchange("appa", (EXT2, 9001).into(), MIB, MIB);
    m.eventually_logged(
        "a",
        "proxy to 10.244.3.8:9001 using TCP type Passthrough",
        1,
    )
    .unwrap();
    m.eventually_logged("a", "dst.service=\"range.example.com\"", 1)
        .unwrap();
    m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    m.eventually_logged("a", "proxy to 10.244.2.4:80 using TCP type Direct", 2)
        .unwrap();
    assert!(
        !m.log("a").contains("HBONE via 10.244.2.4"),
        "{}",
        m.log("a")
    );
}
