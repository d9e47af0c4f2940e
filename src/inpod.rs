//! In-pod mode's link to istio-cni: the ZDS client that takes pods (and their network
//! namespaces) from the node agent, keeps the registry of enrolled pods and answers every
//! request with an `Ack`. What "serving a pod" means is behind [`PodHandler`]: the client calls
//! it on add and remove and acks with its answer; the listeners inside each pod's netns are the
//! handler's business (a later step), not this module's.
//!
//! Threads: [`client::spawn`] starts `zring-inpod`, which does blocking IO on the agent's
//! SEQPACKET socket and calls the handler inline, so an add is acked only once the handler has
//! returned. Nothing here runs on a core.
//!
//! Layout: `codec` (packet ⇄ request, pure), `registry` (enrolled pods and the snapshot
//! reconciliation, pure apart from the handler it drives), `client` (the thread: connect,
//! hello, loop, reconnect), `metrics` (atomics the thread writes, anyone reads), `testing` (a
//! recording handler for tests).
//!
//! Protocol facts (Istio's `zds.proto` and ztunnel's `src/inpod/`): on every connection the
//! proxy sends `ZdsHello{V1}`; the agent re-sends every pod it knows as `add` (or `keep` for a pod
//! whose netns it lost), then `snapshot_sent`, after which pods not re-sent are removed; later
//! `add` and `del` arrive one at a time. The agent waits for each `Ack` before the next request.

pub mod client;
pub mod codec;
pub mod factory;
pub mod handler;
pub mod handoff;
pub mod metrics;
pub mod pod;
pub mod registry;
pub mod testing;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

pub use client::{Client, ClientConfig};
pub use handler::ListenerHandler;
pub use metrics::Metrics;

/// Environment variable naming the agent's socket (ztunnel's name).
pub const INPOD_UDS_ENV: &str = "INPOD_UDS";
/// The agent's socket when [`INPOD_UDS_ENV`] is unset (ztunnel's default).
pub const DEFAULT_INPOD_UDS: &str = crate::config::DEFAULT_INPOD_UDS;

/// Who a pod is, as the agent tells it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

/// A pod's network namespace: the descriptor the agent sent, shared (the registry and the
/// handler both hold it for as long as the pod is enrolled), plus the (device, inode) that names
/// the namespace, so a duplicate add of the same namespace is recognised whatever descriptor
/// number it arrived as.
#[derive(Debug, Clone)]
pub struct PodNetns {
    fd: Arc<OwnedFd>,
    id: (u64, u64),
}

impl PodNetns {
    pub fn new(fd: OwnedFd, id: (u64, u64)) -> PodNetns {
        PodNetns {
            fd: Arc::new(fd),
            id,
        }
    }

    /// The namespace's identity: equal for every descriptor of the same namespace.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }

    /// A shared handle on the descriptor, for whoever must enter the namespace later (`setns`).
    pub fn shared_fd(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }
}

impl AsFd for PodNetns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A pod handed over by the agent.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Kubernetes uid: the key of every request about this pod.
    pub uid: String,
    pub info: WorkloadInfo,
    pub netns: PodNetns,
}

/// The seam between the ZDS client and the data path: the client owns the protocol and the
/// registry, the handler makes a pod served or not. Called on the `zring-inpod` thread, one call
/// at a time, so a handler may block (the listener step's handler will enter the pod's netns on
/// a helper thread via [`PodNetns::shared_fd`], bind 15001/15006/15008 for every core, hand them
/// over and return once every core reports them up).
pub trait PodHandler: Send + 'static {
    /// Starts serving `pod`. Return only once it is served (its listeners are up): the client
    /// acks the agent right after, with `Err`'s text as the ack's error. On `Err` the pod stays
    /// pending and is retried.
    fn add(&mut self, pod: &Pod) -> Result<(), String>;

    /// Stops serving `pod` (deleted, dropped by reconciliation, or replaced by an add with
    /// another netns). The pod leaves the registry whatever this returns; an `Err` is logged,
    /// counted and, for a `del`, sent as the ack's error.
    fn remove(&mut self, pod: &Pod) -> Result<(), String>;
}
