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
//!   client); the source workload is the pod's own, found by uid (or name and namespace);
//!   the only local destination is the pod itself.
//!
//! In both, a source or destination workload the snapshot does not have yet is waited for,
//! bounded ([`WORKLOAD_WAIT`], ztunnel's 5 s), then refused with [`Error::NoWorkload`].
//!
//! Runs on a core; a `Capture` is cloned into each connection's task (an `Rc`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::{debug, info};

use super::{Error, OrigDst, Role};
use crate::core::CoreCtx;
use crate::inpod::pod::CorePod;
use crate::metrics::WorkloadWait;
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

/// How long a connection waits for a workload the snapshot does not have yet: ztunnel's bound
/// for its own pod's workload (5 s), here for the source (15001) and the destination (15006,
/// 15008) in both capture modes.
pub const WORKLOAD_WAIT: Duration = Duration::from_secs(5);

impl Capture {
    /// The original destination of an accepted socket, or `None`, logged, when the socket
    /// cannot tell (reset before the task ran; a REDIRECT without a conntrack entry).
    pub fn orig_dst(&self, ctx: &CoreCtx, stream: &TcpStream, l: Listener) -> Option<OrigDst> {
        let found = match (self, l) {
            (Capture::Pod(_), Listener::Outbound | Listener::InboundPlaintext) => {
                crate::sys::origdst::original_dst_any_of(stream)
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

    /// The workload a connection from `src` comes from (15001): node mode, the workload at
    /// `src`'s IP; in a pod, the pod's own. Waited for (see [`Capture::wait_workload`]) when
    /// the snapshot does not have it yet.
    pub async fn source_workload(
        &self,
        ctx: &CoreCtx,
        snapshot: &mut Arc<Snapshot>,
        src: SocketAddr,
    ) -> Result<Arc<Workload>, Error> {
        match self {
            Capture::Node => {
                let node = &*ctx.config().node_name;
                let find = |s: &Snapshot| s.workload_near(node, src.ip()).cloned();
                wait_workload(ctx, snapshot, Role::Source, src.ip(), find).await
            }
            Capture::Pod(pod) => {
                let find = |s: &Snapshot| pod.workload(s);
                wait_workload(ctx, snapshot, Role::Source, src.ip(), find).await
            }
        }
    }

    /// The workload at `dst`, which this capture must serve (15006, 15008): node mode, a
    /// workload of this node; in a pod, the pod itself. Waited for when the snapshot has no
    /// workload at `dst` yet; one that is there but not served here is refused at once.
    pub async fn local_workload(
        &self,
        ctx: &CoreCtx,
        snapshot: &mut Arc<Snapshot>,
        dst: SocketAddr,
    ) -> Result<Arc<Workload>, Error> {
        let node = &*ctx.config().node_name;
        let find = |s: &Snapshot| s.workload_near(node, dst.ip()).cloned();
        let w = wait_workload(ctx, snapshot, Role::Destination, dst.ip(), find).await?;
        let served = match self {
            Capture::Node => *w.node == *ctx.config().node_name,
            Capture::Pod(pod) => pod.is_workload(&w),
        };
        if !served {
            return Err(Error::NotLocal(dst.ip()));
        }
        Ok(w)
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

/// `find`'s workload in `snapshot`, or, when it is not there, waited for up to
/// [`WORKLOAD_WAIT`] (`CoreCtx::wait_in_snapshot`: nothing runs while nobody waits), then
/// [`Error::NoWorkload`]. Ztunnel waits the same way for its pod's own workload: a pod's first
/// connections may come before the control plane has told every node about it (a node's
/// capture, the agent's add, or the peer's HBONE can each be ahead of this node's snapshot).
/// A wait is counted (`zring_workload_waits_total`) and logged; a hit is not.
async fn wait_workload(
    ctx: &CoreCtx,
    snapshot: &mut Arc<Snapshot>,
    role: Role,
    ip: IpAddr,
    mut find: impl FnMut(&Snapshot) -> Option<Arc<Workload>>,
) -> Result<Arc<Workload>, Error> {
    if let Some(w) = find(snapshot) {
        return Ok(w);
    }
    info!(
        core = ctx.id,
        "waiting for {role} workload {ip}, not in the configuration yet"
    );
    let start = Instant::now();
    let found = ctx.wait_in_snapshot(snapshot, WORKLOAD_WAIT, find).await;
    let waited = start.elapsed();
    ctx.metrics.workload_waited(WorkloadWait {
        inbound: role == Role::Destination,
        found: found.is_some(),
    });
    match found {
        Some(w) => {
            info!(
                core = ctx.id,
                ?waited,
                "{role} workload {ip} arrived while a connection waited"
            );
            Ok(w)
        }
        None => Err(Error::NoWorkload { role, ip, waited }),
    }
}
