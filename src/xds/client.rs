//! The Delta ADS client: one gRPC stream to istiod (`XDS_ADDRESS`) carrying both resource
//! types zring needs, `istio.workload.Address` and `istio.security.Authorization`, as
//! wildcard subscriptions. Runs as one task on the control thread's tokio current-thread
//! runtime; the cores never see it, only the snapshots it publishes.
//!
//! Per response: decode and convert every resource, apply them to the `ResourceSet`
//! (`resources`: one bad resource is rejected, the others apply), build and publish a new
//! `Snapshot` when anything changed, then ACK the nonce — or NACK it with every rejected
//! resource's name and reason in `error_detail` (the accepted ones of that response stay
//! applied, as ztunnel does). Building the snapshot happens here, on the control thread; the
//! cores pick it up with one pointer swap.
//!
//! Resilience: the resource map outlives the stream. On any disconnect the last snapshot keeps
//! serving; the client reconnects after a jittered backoff (10 ms doubling to 15 s, back to
//! 10 ms once a stream has delivered a response) and opens the new stream with
//! `initial_resource_versions` = everything it holds, so istiod sends only what changed and
//! removes what disappeared meanwhile.
//!
//! First complete state: [`InitialSync`] flips once every subscribed type has had one response
//! applied (rejected resources included: a single bad resource must not keep the node unready
//! forever), after that response's snapshot is published. The cores bind and serve only then
//! (`app`), and the readiness endpoint (15021) follows; it never flips back on disconnect,
//! because the last snapshot still serves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost_types::{Struct, Value, value::Kind as ValueKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use super::proto::envoy::config::core::v3::Node;
use super::proto::google::rpc::Status;
use super::resources::{Kind, Rejection, ResourceSet};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::grpc::{GrpcError, Target};
use crate::metrics::{Termination, XdsMetrics};
use crate::state::{Snapshot, excerpt};

/// Reconnect delays (ztunnel's schedule).
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Largest response accepted: 100,000 workloads are about 30 MB.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Rejections listed by name in one NACK; the rest are counted.
const MAX_LISTED_REJECTIONS: usize = 64;
/// google.rpc.Code INVALID_ARGUMENT.
const INVALID_ARGUMENT: i32 = 3;

/// "Every subscribed type has been received once": the signal that opens the cores (nothing
/// is served before it: between the address and the authorization responses, policies would
/// simply be absent) and readiness. Cheap to read from any thread; awaitable on the control
/// thread ([`InitialSync::wait`]).
#[derive(Debug, Default)]
pub struct InitialSync {
    address: AtomicBool,
    authorization: AtomicBool,
    changed: tokio::sync::Notify,
}

impl InitialSync {
    /// Waiting for the first response of each type.
    pub fn pending() -> Arc<InitialSync> {
        Arc::new(InitialSync::default())
    }

    /// Already complete: the local file or no source at all (nothing to wait for).
    pub fn complete() -> Arc<InitialSync> {
        let s = InitialSync::default();
        s.mark(Kind::Address);
        s.mark(Kind::Authorization);
        Arc::new(s)
    }

    pub fn is_done(&self) -> bool {
        self.address.load(Ordering::Acquire) && self.authorization.load(Ordering::Acquire)
    }

    /// The types not received yet, for the log line that says what start-up waits for.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.address.load(Ordering::Acquire) {
            missing.push("addresses (istio.workload.Address)");
        }
        if !self.authorization.load(Ordering::Acquire) {
            missing.push("authorizations (istio.security.Authorization)");
        }
        missing
    }

    /// Whether the first Address response has been applied.
    pub fn has_addresses(&self) -> bool {
        self.address.load(Ordering::Acquire)
    }

    /// Resolves once every type has been received (at once if it has).
    pub async fn wait(&self) {
        self.wait_until(InitialSync::is_done).await;
    }

    /// Resolves once the first Address response has been applied (at once if it has).
    pub async fn wait_for_addresses(&self) {
        self.wait_until(InitialSync::has_addresses).await;
    }

    async fn wait_until(&self, done: impl Fn(&InitialSync) -> bool) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the check, so a mark in between is not missed.
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    fn mark(&self, kind: Kind) {
        let flag = match kind {
            Kind::Address => &self.address,
            Kind::Authorization => &self.authorization,
        };
        if !flag.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }
}

/// Why a stream ended; the client logs it and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error("istiod: {0}")]
    Status(Box<tonic::Status>),
    #[error("the request stream closed")]
    RequestsClosed,
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> ClientError {
        ClientError::Status(Box::new(s))
    }
}

/// The node istiod sees: ztunnel's id format (istiod picks the proxy type from the `ztunnel`
/// prefix and serves it the workload API) and ztunnel's metadata keys, plus `CLUSTER_ID` and
/// every `ISTIO_META_*` variable (which win over the built-in keys).
pub fn node(config: &Config) -> Node {
    let ns = &config.pod_namespace;
    let mut fields: BTreeMap<String, Value> = [
        ("NAME", config.pod_name.as_str()),
        ("NAMESPACE", ns.as_str()),
        ("INSTANCE_IPS", &config.instance_ip.to_string()),
        ("NODE_NAME", config.node_name.as_str()),
        ("CLUSTER_ID", config.cluster_id.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), string_value(v)))
    .collect();
    for (k, v) in &config.proxy_metadata {
        fields.insert(k.clone(), string_value(v));
    }
    Node {
        id: format!(
            "ztunnel~{}~{}.{ns}~{ns}.svc.cluster.local",
            config.instance_ip, config.pod_name
        ),
        cluster: String::new(),
        metadata: Some(Struct { fields }),
        user_agent_name: "zring".into(),
        user_agent_version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn string_value(v: &str) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(v.to_owned())),
    }
}

/// The Delta ADS client and the resources it holds.
#[derive(Debug)]
pub struct AdsClient {
    target: Target,
    node: Node,
    resources: ResourceSet,
    sync: Arc<InitialSync>,
    backoff: Backoff,
    /// Streams ended, responses ACKed/NACKed, resources rejected: for `/metrics`.
    metrics: Arc<XdsMetrics>,
}

impl AdsClient {
    pub fn new(target: Target, node: Node, sync: Arc<InitialSync>) -> AdsClient {
        AdsClient {
            target,
            node,
            resources: ResourceSet::new(),
            sync,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            metrics: Arc::default(),
        }
    }

    /// Counts into `metrics` (the process registry's) instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<XdsMetrics>) -> AdsClient {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<XdsMetrics> {
        &self.metrics
    }

    /// Streams forever: every new snapshot goes to `publish`. Returns only when dropped.
    pub async fn run(mut self, mut publish: impl FnMut(Snapshot)) {
        loop {
            let mut progressed = false;
            let mut established = false;
            let ended = self
                .stream(&mut publish, &mut progressed, &mut established)
                .await;
            let why = match (&ended, established) {
                (Ok(()), _) => Termination::Complete,
                (Err(_), true) => Termination::Error,
                (Err(_), false) => Termination::ConnectionError,
            };
            self.metrics.terminated(why);
            match ended {
                Ok(()) => info!(
                    address = self.target.address(),
                    "xDS stream ended by istiod"
                ),
                Err(e) => warn!(address = self.target.address(), "xDS stream: {e}"),
            }
            if progressed {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            debug!(?delay, "reconnecting to istiod");
            tokio::time::sleep(delay).await;
        }
    }

    /// One stream: connect, subscribe to both types, apply and acknowledge responses until
    /// the stream ends. `established` turns true once istiod accepted the stream, `progressed`
    /// once a response has been handled.
    async fn stream(
        &mut self,
        publish: &mut impl FnMut(Snapshot),
        progressed: &mut bool,
        established: &mut bool,
    ) -> Result<(), ClientError> {
        let channel = self.target.connect().await?;
        let (requests, outbound) = mpsc::channel(Kind::ALL.len() + 2);
        for kind in Kind::ALL {
            let initial = self.initial_request(kind);
            info!(
                type_url = kind.type_url(),
                known = initial.initial_resource_versions.len(),
                "subscribing"
            );
            requests
                .send(initial)
                .await
                .map_err(|_| ClientError::RequestsClosed)?;
        }
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        self.target.authorize(&mut request)?;
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .delta_aggregated_resources(request)
            .await?
            .into_inner();
        *established = true;
        info!(address = self.target.address(), "xDS stream established");
        while let Some(response) = responses.message().await? {
            let reply = self.handle(response, publish);
            *progressed = true;
            requests
                .send(reply)
                .await
                .map_err(|_| ClientError::RequestsClosed)?;
        }
        Ok(())
    }

    /// The first request of `kind` on a new stream: a wildcard subscription (empty name
    /// lists), the node, and every resource already held with its version.
    pub fn initial_request(&self, kind: Kind) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: kind.type_url().into(),
            initial_resource_versions: self.resources.versions(kind),
            ..Default::default()
        }
    }

    /// Applies one response and returns its ACK or NACK.
    pub fn handle(
        &mut self,
        response: DeltaDiscoveryResponse,
        publish: &mut impl FnMut(Snapshot),
    ) -> DeltaDiscoveryRequest {
        let DeltaDiscoveryResponse {
            type_url,
            resources,
            removed_resources,
            nonce,
            ..
        } = response;
        let Some(kind) = Kind::from_type_url(&type_url) else {
            warn!(type_url = %excerpt(&type_url), "response for a type zring did not subscribe to");
            return nack(
                type_url,
                nonce,
                "zring subscribes only to istio.workload.Address and istio.security.Authorization"
                    .into(),
            );
        };
        let received = resources.len();
        let applied = self.resources.apply(kind, resources, removed_resources);
        if let Some(snapshot) = applied.snapshot {
            info!(
                type_url,
                received,
                updated = applied.updated,
                removed = applied.removed,
                rejected = applied.rejected.len(),
                workloads = snapshot.workload_count(),
                services = snapshot.service_count(),
                policies = snapshot.policy_count(),
                "applied xDS response"
            );
            publish(snapshot);
        }
        self.metrics.response(kind, applied.rejected.len());
        let was_done = self.sync.is_done();
        self.sync.mark(kind);
        if !was_done && self.sync.is_done() {
            info!("initial xDS sync complete: every subscribed type received");
        }
        if applied.rejected.is_empty() {
            return DeltaDiscoveryRequest {
                type_url,
                response_nonce: nonce,
                ..Default::default()
            };
        }
        let detail = rejection_detail(&applied.rejected);
        warn!(type_url, nonce, "NACK: {detail}");
        nack(type_url, nonce, detail)
    }

    /// The resources held now (tests and the future config dump read it).
    pub fn resources(&self) -> &ResourceSet {
        &self.resources
    }
}

fn nack(type_url: String, nonce: String, message: String) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url,
        response_nonce: nonce,
        error_detail: Some(Status {
            code: INVALID_ARGUMENT,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

/// `N rejected: name: reason; name: reason; … and M more`, names cut short.
fn rejection_detail(rejected: &[Rejection]) -> String {
    let mut s = format!("{} resource(s) rejected: ", rejected.len());
    for (i, r) in rejected.iter().take(MAX_LISTED_REJECTIONS).enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = write!(s, "{}: {}", excerpt(&r.name), r.error);
    }
    if rejected.len() > MAX_LISTED_REJECTIONS {
        let _ = write!(s, "; and {} more", rejected.len() - MAX_LISTED_REJECTIONS);
    }
    s
}

#[cfg(test)]
mod tests;
