//! [`Capture`]: how a connection reached zring, and the few answers that depend on it. The data
//! path (`outbound`, `inbound_passthrough`, `inbound`) is one for both capture modes; it asks
//! its `Capture` for the original destination, the upstream socket, the source workload and
//! whether a destination is served here, and nothing else differs.
//!
//! - [`Capture::Node`] (`PROXY_MODE=node`): TPROXY on the node. The original destination is the
//!   accepted socket's local address; upstream sockets are made in the node's netns, bound to
//!   the client's IP (IP_TRANSPARENT) and marked; the source workload is found by the client's
//!   IP; local destinations are the workloads of this node.
//! - [`Capture::Pod`] (in-pod, `PROXY_MODE=shared`): the listener runs inside one enrolled pod's
//!   netns, whose rules REDIRECT. The original destination of 15001 and 15006 is
//!   `SO_ORIGINAL_DST` (15008 is addressed directly: its local address); upstream sockets,
//!   HBONE's TCP connections to a peer's 15008 included, are made inside the pod's netns by
//!   the `zring-podns` thread, marked so the pod's rules let them out (outbound from the pod's
//!   own IP, no spoofing; inbound from the client's IP, transparent, so the pod sees the real
//!   client); the source workload is the pod's own, found by uid (or name and namespace)
//!   and waited for, bounded, when the pod is newer than the snapshot; the only local
//!   destination is the pod itself.
//!
//! Runs on a core; a `Capture` is cloned into each connection's task (an `Rc`).

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::{debug, info};

use super::{Error, OrigDst};
use crate::core::CoreCtx;
use crate::inpod::pod::CorePod;
use crate::net;
use crate::state::{Snapshot, Workload};
use crate::sys::socket::SpoofSide;

/// How the connections of one listener were captured.
#[derive(Debug, Clone)]
pub enum Capture {
    /// Node-level TPROXY (`PROXY_MODE=node`).
    Node,
    /// Inside this enrolled pod's netns (in-pod mode).
    Pod(Rc<CorePod>),
}

/// Which listener accepted a connection: the in-pod original destination depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Outbound,
    InboundPlaintext,
    Inbound,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Outbound => "outbound",
            Listener::InboundPlaintext => "inbound plaintext",
            Listener::Inbound => "inbound",
        }
    }
}

/// How often a connection from a pod newer than the snapshot looks for its workload again.
const WORKLOAD_POLL: Duration = Duration::from_millis(10);

impl Capture {
    /// The original destination of an accepted socket, or `None`, logged, when the socket
    /// cannot tell (reset before the task ran; a REDIRECT without a conntrack entry).
    pub fn orig_dst(&self, ctx: &CoreCtx, stream: &TcpStream, l: Listener) -> Option<OrigDst> {
        let found = match (self, l) {
            (Capture::Pod(_), Listener::Outbound | Listener::InboundPlaintext) => {
                crate::sys::origdst::original_dst_of(stream).map(SocketAddr::V4)
            }
            (Capture::Node, _) | (Capture::Pod(_), Listener::Inbound) => stream.local_addr(),
        };
        match found {
            Ok(a) => Some(OrigDst(a)),
            Err(e) => {
                debug!(core = ctx.id, "{}: no original destination: {e}", l.name());
                None
            }
        }
    }

    /// The node name routing compares workloads' nodes with. In a pod no destination counts as
    /// local: a pod on this node is reached like any other, through its own 15008 (where zring
    /// listens inside that pod), so its inbound policies are enforced there, with the source's
    /// proven identity.
    pub fn route_node<'c>(&self, ctx: &'c CoreCtx) -> &'c str {
        match self {
            Capture::Node => &ctx.config().node_name,
            Capture::Pod(_) => "",
        }
    }

    /// Connects to `dst` for a connection from `src`: node mode from `src`'s IP (transparent,
    /// on `side`'s port range); in-pod mode from inside the pod's netns, from the pod's own IP
    /// outbound and from `src`'s inbound (as ztunnel does, so the pod sees the real client).
    pub fn connect(
        &self,
        ctx: &CoreCtx,
        dst: SocketAddr,
        src: SocketAddr,
        side: SpoofSide,
    ) -> impl Future<Output = Result<TcpStream, net::Error>> + 'static {
        let cfg = ctx.config();
        let (mark, timeout) = (cfg.packet_mark, cfg.connect_timeout);
        let pod = match self {
            Capture::Node => None,
            Capture::Pod(pod) => Some(pod.clone()),
        };
        async move {
            match pod {
                None => net::connect(dst, Some(src.ip()), side, mark, timeout).await,
                Some(pod) => {
                    let from = (side == SpoofSide::Inbound).then_some(src.ip());
                    Box::pin(pod.connect(dst, from, timeout)).await
                }
            }
        }
    }

    /// The workload a connection from `src` comes from (15001). In a pod: the pod's own,
    /// waited for up to the connect timeout when the snapshot does not have it yet.
    pub async fn source_workload(
        &self,
        ctx: &CoreCtx,
        snapshot: &mut Arc<Snapshot>,
        src: SocketAddr,
    ) -> Option<Arc<Workload>> {
        let pod = match self {
            Capture::Node => return snapshot.workload_by_ip(src.ip()).cloned(),
            Capture::Pod(pod) => pod,
        };
        if let Some(w) = pod.workload(snapshot) {
            return Some(w);
        }
        let start = Instant::now();
        while start.elapsed() < ctx.config().connect_timeout {
            monoio::time::sleep(WORKLOAD_POLL).await;
            *snapshot = ctx.shared.snapshot.load_full();
            if let Some(w) = pod.workload(snapshot) {
                info!(core = ctx.id, uid = %pod.ctx.uid, waited = ?start.elapsed(), "pod's workload arrived");
                return Some(w);
            }
        }
        None
    }

    /// The workload at `dst`, which this capture must serve (15006, 15008): node mode, a
    /// workload of this node; in a pod, the pod itself.
    pub fn local_workload(
        &self,
        ctx: &CoreCtx,
        snapshot: &Snapshot,
        dst: SocketAddr,
    ) -> Result<Arc<Workload>, Error> {
        let w = snapshot
            .workload_by_ip(dst.ip())
            .ok_or(Error::UnknownDestination(dst.ip()))?;
        let served = match self {
            Capture::Node => *w.node == *ctx.config().node_name,
            Capture::Pod(pod) => pod.is_workload(w),
        };
        if !served {
            return Err(Error::NotLocal(dst.ip()));
        }
        Ok(w.clone())
    }

    /// Resolves when this capture's listeners stop taking work: the core drains, or (in a pod)
    /// the pod is removed. Inbound HBONE connections then get GOAWAY.
    pub async fn stopping(&self, ctx: &CoreCtx) {
        match self {
            Capture::Node => ctx.draining.wait().await,
            Capture::Pod(pod) => monoio::select! {
                () = ctx.draining.wait() => {}
                () = pod.removed().wait() => {}
            },
        }
    }

    /// The enrolled pod's uid, in a pod: its pooled HBONE connections are its own.
    pub fn pod_uid(&self) -> Option<Arc<str>> {
        match self {
            Capture::Node => None,
            Capture::Pod(pod) => Some(pod.uid().clone()),
        }
    }
}
