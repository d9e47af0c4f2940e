//! The seam between in-pod enrolment and the data path: what a core knows about one enrolled pod
//! ([`PodCtx`], shared by every core) and how a core gets an upstream socket created inside that
//! pod's network namespace without blocking ([`CorePod::connect`]).
//!
//! Threads: a [`PodCtx`] is built on the `zring-inpod` thread and sent (`Arc`) to every core; a
//! [`CorePod`] is built by one core and stays there (`Rc`). The socket itself is made by the
//! `zring-podns` factory thread (`factory`), which enters the pod's netns, creates and marks
//! the socket, comes back, and mails the descriptor to the asking core (`handoff`); the core
//! awaits it like any other IO.
//!
//! In-pod facts the data path relies on (design §6): the pod's rules REDIRECT, so a connection
//! accepted on 15001/15006 has its original destination in conntrack ([`original_dst`]); an
//! upstream socket is created inside the pod's netns, so its source is the pod's own IP (no
//! spoofing), and marked with `PACKET_MARK` (0x539) so the pod's rules let it out.
//!
//! Invariant: an idle pod holds no descriptor but its netns (shared by every core's `Arc`):
//! upstream sockets are made per request, never stocked.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::factory::SocketFactory;
use super::handoff::Mailbox;
use super::{PodNetns, WorkloadInfo};
use crate::latch::Latch;
use crate::state::{Snapshot, Workload};

/// The ports every core listens on inside an enrolled pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodPort {
    /// 15001: the pod's outbound TCP, REDIRECTed.
    Outbound,
    /// 15006: plaintext TCP to the pod, REDIRECTed.
    InboundPlaintext,
    /// 15008: HBONE to the pod (not redirected: addressed to 15008 itself).
    Inbound,
}

impl PodPort {
    pub const ALL: [PodPort; 3] = [
        PodPort::Outbound,
        PodPort::InboundPlaintext,
        PodPort::Inbound,
    ];

    pub fn port(self) -> u16 {
        match self {
            PodPort::Outbound => 15001,
            PodPort::InboundPlaintext => 15006,
            PodPort::Inbound => 15008,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PodPort::Outbound => "outbound",
            PodPort::InboundPlaintext => "inbound_plaintext",
            PodPort::Inbound => "inbound",
        }
    }
}

/// One enrolled pod, as every core sees it.
#[derive(Debug)]
pub struct PodCtx {
    /// Kubernetes uid: how the agent names the pod (and how xDS will find its workload).
    pub uid: String,
    pub info: WorkloadInfo,
    /// The pod's network namespace; held for as long as any core serves the pod or one of its
    /// connections is open.
    pub netns: PodNetns,
    /// `PACKET_MARK` for upstream sockets.
    pub mark: u32,
    factory: SocketFactory,
}

impl PodCtx {
    pub fn new(
        uid: String,
        info: WorkloadInfo,
        netns: PodNetns,
        mark: u32,
        factory: SocketFactory,
    ) -> PodCtx {
        PodCtx {
            uid,
            info,
            netns,
            mark,
            factory,
        }
    }
}

/// The original destination of a connection a pod's rules REDIRECTed to 15001 or 15006.
pub fn original_dst(stream: &impl AsRawFd) -> io::Result<SocketAddrV4> {
    crate::sys::origdst::original_dst_of(stream)
}

/// One core's view of one pod: its shared context, the core's table of upstream socket
/// requests (one table per core, shared by every pod the core serves), the latch fired when
/// the pod is removed, and the xDS uid its workload was last found under.
#[derive(Debug)]
pub struct CorePod {
    pub ctx: Arc<PodCtx>,
    /// The agent's uid, shared: the key of the pod's pooled HBONE connections.
    uid: Arc<str>,
    upstreams: Rc<Upstreams>,
    /// Fired when the pod is removed on this core: its listeners close, its inbound HBONE
    /// connections get GOAWAY.
    removed: Latch<()>,
    /// The uid of the pod's workload in the snapshot, once found (by the agent's uid, else by
    /// name and namespace), so later lookups are one hash probe.
    workload_uid: RefCell<Option<Arc<str>>>,
}

impl CorePod {
    pub fn new(ctx: Arc<PodCtx>, upstreams: Rc<Upstreams>) -> CorePod {
        CorePod {
            uid: ctx.uid.as_str().into(),
            ctx,
            upstreams,
            removed: Latch::default(),
            workload_uid: RefCell::new(None),
        }
    }

    /// The agent's uid of the pod.
    pub fn uid(&self) -> &Arc<str> {
        &self.uid
    }

    /// Fired when the pod is removed on this core.
    pub fn removed(&self) -> &Latch<()> {
        &self.removed
    }

    /// Whether `w` is this pod's workload: the agent's uid is the workload's, or (Istio: the
    /// agent names a pod by its Kubernetes uid, xDS by `cluster//Pod/ns/name`) the name and
    /// namespace are the pod's.
    pub fn is_workload(&self, w: &Workload) -> bool {
        let info = &self.ctx.info;
        *w.uid == *self.ctx.uid
            || (!info.name.is_empty() && *w.name == *info.name && *w.namespace == *info.namespace)
    }

    /// The pod's workload in `snapshot`, if it is there yet.
    pub fn workload(&self, snapshot: &Snapshot) -> Option<Arc<Workload>> {
        if let Some(uid) = self.workload_uid.borrow().as_deref()
            && let Some(w) = snapshot.workload_by_uid(uid)
        {
            return Some(w.clone());
        }
        let found = snapshot
            .workload_by_uid(&self.ctx.uid)
            .or_else(|| snapshot.workloads().find(|w| self.is_workload(w)))?
            .clone();
        *self.workload_uid.borrow_mut() = Some(found.uid.clone());
        Some(found)
    }

    /// A new TCP socket inside the pod's netns, marked, non-blocking, not yet connected.
    pub fn socket(&self, ipv6: bool) -> SocketRequest {
        self.upstreams.request(&self.ctx, ipv6)
    }

    /// Connects to `dst` from inside the pod's netns, within `timeout`. The source is the
    /// pod's own IP, unless `from` names the client's (inbound, of `dst`'s family, so the pod
    /// sees the real client; IP_TRANSPARENT, and the pod's rules route the replies of the proxy's marked
    /// connections back to it). Errors read like node mode's (`net::Error`), so the data path
    /// reports both alike.
    pub async fn connect(
        &self,
        dst: SocketAddr,
        from: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<monoio::net::TcpStream, crate::net::Error> {
        let err = |source| crate::net::Error::Connect { dst, source };
        let fd = self.socket(dst.is_ipv6()).await.map_err(err)?;
        let socket = socket2::Socket::from(fd);
        if let Some(ip) = from
            && ip.is_ipv4() == dst.is_ipv4()
        {
            crate::sys::socket::set_transparent(&socket, ip.is_ipv6()).map_err(err)?;
            socket.bind(&SocketAddr::new(ip, 0).into()).map_err(err)?;
        }
        match socket.connect(&dst.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(err(e)),
        }
        let stream = monoio::net::TcpStream::from_std(socket.into()).map_err(err)?;
        match monoio::time::timeout(timeout, stream.writable(false)).await {
            Err(_) => return Err(crate::net::Error::ConnectTimeout(dst)),
            Ok(r) => r.map_err(err)?,
        }
        crate::sys::socket::take_socket_error(stream.as_raw_fd()).map_err(err)?;
        Ok(stream)
    }
}

/// A core's pending upstream socket requests, by id. The core's pod task delivers the
/// factory's answers ([`Upstreams::deliver`]); each request's future takes its own.
#[derive(Debug)]
pub struct Upstreams {
    /// Where the factory mails answers: this core's own mailbox.
    reply: Mailbox,
    next: Cell<u64>,
    slots: RefCell<HashMap<u64, Slot>>,
}

#[derive(Debug)]
enum Slot {
    Waiting(Option<Waker>),
    Ready(io::Result<OwnedFd>),
}

impl Upstreams {
    pub fn new(reply: Mailbox) -> Upstreams {
        Upstreams {
            reply,
            next: Cell::new(0),
            slots: RefCell::default(),
        }
    }

    fn request(self: &Rc<Self>, pod: &PodCtx, ipv6: bool) -> SocketRequest {
        let id = self.next.get();
        self.next.set(id + 1);
        self.slots.borrow_mut().insert(id, Slot::Waiting(None));
        if let Err(e) = pod
            .factory
            .request(&pod.netns, ipv6, pod.mark, id, &self.reply)
        {
            self.slots.borrow_mut().insert(id, Slot::Ready(Err(e)));
        }
        SocketRequest {
            table: self.clone(),
            id,
        }
    }

    /// The factory's answer to request `id`. A request whose future is gone drops it (the
    /// descriptor closes here).
    pub fn deliver(&self, id: u64, socket: io::Result<OwnedFd>) {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(&id) else {
            return;
        };
        if let Slot::Waiting(waker) = std::mem::replace(slot, Slot::Ready(socket))
            && let Some(w) = waker
        {
            w.wake();
        }
    }

    /// Requests waiting for the factory (for tests and leak checks).
    pub fn pending(&self) -> usize {
        self.slots.borrow().len()
    }
}

/// See [`CorePod::socket`].
#[derive(Debug)]
pub struct SocketRequest {
    table: Rc<Upstreams>,
    id: u64,
}

impl Future for SocketRequest {
    type Output = io::Result<OwnedFd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slots = self.table.slots.borrow_mut();
        match slots.remove(&self.id) {
            Some(Slot::Ready(r)) => Poll::Ready(r),
            Some(Slot::Waiting(_)) | None => {
                slots.insert(self.id, Slot::Waiting(Some(cx.waker().clone())));
                Poll::Pending
            }
        }
    }
}

impl Drop for SocketRequest {
    fn drop(&mut self) {
        self.table.slots.borrow_mut().remove(&self.id);
    }
}
