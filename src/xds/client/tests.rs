//! The real `AdsClient` against a scripted fake istiod (a tonic server on loopback): initial
//! sync, incremental updates, ACK/NACK by nonce, a server restart mid-stream with resync by
//! `initial_resource_versions`, and responses for unknown types. Every wait polls a condition
//! with a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::grpc::TokenFile;
use crate::xds::proto::discovery::Resource;
use crate::xds::proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use crate::xds::proto::{ADDRESS_TYPE, AUTHORIZATION_TYPE, security as ps};
use crate::xds::resources::tests::{istiod_shapes, workload, workload_resource};

const DEADLINE: Duration = Duration::from_secs(10);

/// One accepted stream, handed to the test to script.
struct Conn {
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>,
    authorization: Option<String>,
}

impl Conn {
    async fn request(&mut self) -> DeltaDiscoveryRequest {
        tokio::time::timeout(DEADLINE, self.requests.message())
            .await
            .expect("no request from the client in time")
            .expect("stream error")
            .expect("stream ended")
    }

    fn send(&self, type_url: &str, nonce: &str, resources: Vec<Resource>, removed: &[&str]) {
        self.responses
            .send(Ok(DeltaDiscoveryResponse {
                type_url: type_url.into(),
                nonce: nonce.into(),
                resources,
                removed_resources: removed.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }))
            .unwrap();
    }

    /// The next request must acknowledge `nonce`; returns its error detail (a NACK) as
    /// (code, message), if any.
    async fn reply_to(&mut self, nonce: &str) -> Option<(i32, String)> {
        let r = self.request().await;
        assert_eq!(r.response_nonce, nonce);
        r.error_detail.map(|s| (s.code, s.message))
    }
}

struct FakeIstiod {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeIstiod {
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.conns.send(Conn {
            requests: request.into_inner(),
            responses: tx,
            authorization,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl Server {
    async fn start(addr: SocketAddr) -> Server {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(
                    AggregatedDiscoveryServiceServer::new(FakeIstiod { conns: tx })
                        .max_decoding_message_size(MAX_MESSAGE_BYTES),
                )
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Server { addr, task, conns }
    }

    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(DEADLINE, self.conns.recv())
            .await
            .expect("the client did not connect in time")
            .unwrap()
    }

    /// Stops listening; streams already open are ended by the test.
    fn stop(self) -> SocketAddr {
        self.task.abort();
        self.addr
    }
}

/// What the client published, as the cores would see it.
struct Published {
    current: Arc<ArcSwap<Snapshot>>,
    count: Arc<AtomicUsize>,
}

fn spawn_client(
    addr: SocketAddr,
    token: Option<TokenFile>,
) -> (JoinHandle<()>, Published, Arc<InitialSync>) {
    let target = Target::new(&format!("http://{addr}"), Path::new("/none"), None, token).unwrap();
    let config = Config::from_lookup(|k| {
        HashMap::from([
            ("POD_NAME", "zring-abc"),
            ("POD_NAMESPACE", "istio-system"),
            ("NODE_NAME", "node-a"),
            ("INSTANCE_IP", "10.0.0.42"),
            ("CLUSTER_ID", "c1"),
        ])
        .get(k)
        .map(|v| v.to_string())
    })
    .unwrap();
    let sync = InitialSync::pending();
    let client = AdsClient::new(target, node(&config), sync.clone());
    let published = Published {
        current: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
        count: Arc::new(AtomicUsize::new(0)),
    };
    let (current, count) = (published.current.clone(), published.count.clone());
    let task = tokio::spawn(client.run(move |s| {
        current.store(Arc::new(s));
        count.fetch_add(1, Ordering::SeqCst);
    }));
    (task, published, sync)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn uids(s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = s.workloads().map(|w| w.uid.to_string()).collect();
    v.sort();
    v
}

fn policy(name: &str) -> Resource {
    use prost::Message;
    let p = ps::Authorization {
        name: name.into(),
        namespace: "default".into(),
        scope: ps::Scope::Namespace as i32,
        action: ps::Action::Deny as i32,
        ..Default::default()
    };
    Resource {
        name: format!("default/{name}"),
        version: "1".into(),
        resource: Some(prost_types::Any {
            type_url: AUTHORIZATION_TYPE.into(),
            value: p.encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// Reads the two initial requests (any order) and returns them by type.
async fn subscriptions(conn: &mut Conn) -> HashMap<String, DeltaDiscoveryRequest> {
    let mut by_type = HashMap::new();
    for _ in 0..2 {
        let r = conn.request().await;
        by_type.insert(r.type_url.clone(), r);
    }
    assert_eq!(by_type.len(), 2);
    by_type
}

#[tokio::test]
async fn initial_sync_then_incremental_updates_are_acked() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "secret-token").unwrap();
    let mut server = Server::start("127.0.0.1:0".parse().unwrap()).await;
    let (client, published, sync) = spawn_client(
        server.addr,
        Some(TokenFile {
            path: token,
            required: true,
        }),
    );
    let mut conn = server.accept().await;
    assert_eq!(conn.authorization.as_deref(), Some("Bearer secret-token"));

    let subs = subscriptions(&mut conn).await;
    for kind in Kind::ALL {
        let r = &subs[kind.type_url()];
        assert!(r.resource_names_subscribe.is_empty(), "wildcard");
        assert!(r.initial_resource_versions.is_empty(), "first stream");
        assert!(r.response_nonce.is_empty());
        let node = r.node.as_ref().unwrap();
        assert_eq!(
            node.id,
            "ztunnel~10.0.0.42~zring-abc.istio-system~istio-system.svc.cluster.local"
        );
        let meta = &node.metadata.as_ref().unwrap().fields;
        let get = |k: &str| match meta.get(k).and_then(|v| v.kind.clone()) {
            Some(ValueKind::StringValue(s)) => s,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(get("NODE_NAME"), "node-a");
        assert_eq!(get("NAMESPACE"), "istio-system");
        assert_eq!(get("NAME"), "zring-abc");
        assert_eq!(get("INSTANCE_IPS"), "10.0.0.42");
        assert_eq!(get("CLUSTER_ID"), "c1");
    }
    assert!(!sync.is_done());

    conn.send(
        ADDRESS_TYPE,
        "n1",
        vec![
            workload_resource(workload("w1", [10, 0, 0, 1])),
            workload_resource(workload("w2", [10, 0, 0, 2])),
        ],
        &[],
    );
    assert_eq!(conn.reply_to("n1").await, None, "ACK");
    eventually("the workloads", || {
        uids(&published.current.load()) == ["w1", "w2"]
    })
    .await;
    assert!(!sync.is_done(), "policies not received yet");

    conn.send(AUTHORIZATION_TYPE, "n2", vec![policy("deny-all")], &[]);
    assert_eq!(conn.reply_to("n2").await, None);
    eventually("initial sync", || sync.is_done()).await;
    assert_eq!(published.current.load().policy_count(), 1);
    assert_eq!(
        uids(&published.current.load()),
        ["w1", "w2"],
        "types are independent"
    );

    conn.send(
        ADDRESS_TYPE,
        "n3",
        vec![workload_resource(workload("w3", [10, 0, 0, 3]))],
        &["w1"],
    );
    assert_eq!(conn.reply_to("n3").await, None);
    eventually("the incremental update", || {
        uids(&published.current.load()) == ["w2", "w3"]
    })
    .await;
    let publishes = published.count.load(Ordering::SeqCst);
    // A removal of something unknown changes nothing: ACKed, nothing published.
    conn.send(ADDRESS_TYPE, "n4", vec![], &["never-existed"]);
    assert_eq!(conn.reply_to("n4").await, None);
    assert_eq!(published.count.load(Ordering::SeqCst), publishes);
    client.abort();
}

#[tokio::test]
async fn a_bad_resource_is_nacked_while_the_others_apply() {
    let mut server = Server::start("127.0.0.1:0".parse().unwrap()).await;
    let (client, published, sync) = spawn_client(server.addr, None);
    let mut conn = server.accept().await;
    assert_eq!(conn.authorization, None);
    subscriptions(&mut conn).await;

    let mut bad_ip = workload("bad-ip", [10, 0, 0, 9]);
    bad_ip.addresses = vec![vec![1, 2, 3, 4, 5]];
    let mut garbage = workload_resource(workload("garbage", [10, 0, 0, 8]));
    garbage.resource.as_mut().unwrap().value = b"\xff\xff\xff".to_vec();
    conn.send(
        ADDRESS_TYPE,
        "n1",
        vec![
            workload_resource(workload("good", [10, 0, 0, 1])),
            workload_resource(bad_ip),
            garbage,
            // Shares good's IP: kept too (istiod sends such pairs while it catches up).
            workload_resource(workload("twin", [10, 0, 0, 1])),
        ],
        &[],
    );
    let (code, msg) = conn.reply_to("n1").await.expect("a NACK");
    assert_eq!(code, 3, "INVALID_ARGUMENT");
    assert!(msg.starts_with("2 resource(s) rejected"), "{msg}");
    for name in ["bad-ip", "garbage"] {
        assert!(msg.contains(name), "{name} missing from {msg}");
    }
    assert!(!msg.contains("twin"), "{msg}");
    assert!(msg.contains("5-byte address"), "{msg}");
    eventually("the good workloads", || {
        uids(&published.current.load()) == ["good", "twin"]
    })
    .await;
    let at_ip = published
        .current
        .load()
        .workloads_at([10, 0, 0, 1].into())
        .len();
    assert_eq!(at_ip, 2);
    // A NACKed response still counts for readiness once its type has been applied.
    conn.send(AUTHORIZATION_TYPE, "n2", vec![], &[]);
    assert_eq!(conn.reply_to("n2").await, None);
    eventually("initial sync", || sync.is_done()).await;

    // A type nobody subscribed to is NACKed and changes nothing.
    conn.send(
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "n3",
        vec![],
        &[],
    );
    assert!(conn.reply_to("n3").await.is_some());
    assert_eq!(uids(&published.current.load()), ["good", "twin"]);
    client.abort();
}

/// istiod's shapes that zring once NACKed (hostname workloads, headless services, two services
/// on one VIP, PASSTHROUGH, CIDR VIPs, one IP on two networks) are ACKed and published whole.
#[tokio::test]
async fn istiod_shapes_are_acked() {
    let mut server = Server::start("127.0.0.1:0".parse().unwrap()).await;
    let (client, published, _sync) = spawn_client(server.addr, None);
    let mut conn = server.accept().await;
    subscriptions(&mut conn).await;
    conn.send(ADDRESS_TYPE, "n1", istiod_shapes(), &[]);
    assert_eq!(conn.reply_to("n1").await, None, "ACK");
    eventually("every shape published", || {
        let s = published.current.load();
        s.workload_count() == 7 && s.service_count() == 6
    })
    .await;
    let s = published.current.load();
    assert_eq!(s.workloads_at([10, 244, 9, 9].into()).len(), 2);
    assert_eq!(s.services_at_vip([10, 96, 5, 5].into()).count(), 2);
    assert!(s.service_for("", [203, 0, 113, 7].into(), None).is_some());
    client.abort();
}

#[tokio::test]
async fn server_restart_keeps_state_and_resyncs_with_initial_versions() {
    let mut server = Server::start("127.0.0.1:0".parse().unwrap()).await;
    let (client, published, sync) = spawn_client(server.addr, None);
    let mut conn = server.accept().await;
    subscriptions(&mut conn).await;
    let mut w2 = workload_resource(workload("w2", [10, 0, 0, 2]));
    w2.version = "w2-v7".into();
    conn.send(
        ADDRESS_TYPE,
        "n1",
        vec![workload_resource(workload("w1", [10, 0, 0, 1])), w2],
        &[],
    );
    conn.reply_to("n1").await;
    conn.send(AUTHORIZATION_TYPE, "n2", vec![policy("p1")], &[]);
    conn.reply_to("n2").await;
    eventually("initial sync", || sync.is_done()).await;

    // istiod goes away: the stream fails and nothing listens any more.
    conn.responses
        .send(Err(Status::unavailable("istiod shutting down")))
        .unwrap();
    drop(conn);
    let addr = server.stop();
    // Reconnects keep failing for a while; the last snapshot keeps serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(uids(&published.current.load()), ["w1", "w2"]);
    assert_eq!(published.current.load().policy_count(), 1);
    assert!(sync.is_done(), "readiness survives a disconnect");

    let mut server = Server::start(addr).await;
    let mut conn = server.accept().await;
    let subs = subscriptions(&mut conn).await;
    assert_eq!(
        subs[ADDRESS_TYPE].initial_resource_versions,
        HashMap::from([
            ("w1".to_string(), "v1".to_string()),
            ("w2".to_string(), "w2-v7".to_string())
        ])
    );
    assert_eq!(
        subs[AUTHORIZATION_TYPE]
            .initial_resource_versions
            .keys()
            .collect::<Vec<_>>(),
        ["default/p1"]
    );
    // The new istiod no longer has w1, has a new w4, and keeps w2 (not resent).
    conn.send(
        ADDRESS_TYPE,
        "m1",
        vec![workload_resource(workload("w4", [10, 0, 0, 4]))],
        &["w1"],
    );
    assert_eq!(conn.reply_to("m1").await, None);
    eventually("the resync", || {
        uids(&published.current.load()) == ["w2", "w4"]
    })
    .await;
    assert_eq!(published.current.load().policy_count(), 1);
    client.abort();
}

#[test]
fn nack_detail_is_bounded() {
    let rejected: Vec<Rejection> = (0..1000)
        .map(|i| Rejection {
            name: format!("{i}-{}", "x".repeat(10_000)),
            error: crate::xds::resources::ResourceError::NoPayload,
        })
        .collect();
    let d = rejection_detail(&rejected);
    assert!(d.starts_with("1000 resource(s) rejected"));
    assert!(d.ends_with("and 936 more"), "{}", &d[d.len() - 40..]);
    assert!(d.len() < 64 * 200, "{}", d.len());
}
