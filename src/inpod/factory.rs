//! Sockets created inside pods' network namespaces: the `zring-podns` thread, which makes
//! upstream sockets for the cores one request at a time, and [`in_netns`], which the
//! `zring-inpod` thread uses to bind a pod's listeners.
//!
//! Threads: `setns` changes the calling thread's namespace, and a core must never block or
//! leave its own namespace, so only these helper threads enter pods. A socket keeps the
//! namespace it was created in after the thread leaves, so the descriptor can go to any core.
//!
//! Invariant: every entry is paired with a return ([`crate::sys::netns::Visit`]); the factory
//! thread is back in zring's own namespace between requests.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

use super::PodNetns;
use super::handoff::{CoreMail, Mailbox};
use crate::sys::netns::Visit;

/// Runs `f` with the calling thread inside the namespace `netns`, and comes back.
pub fn in_netns<T>(netns: BorrowedFd<'_>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let visit = Visit::enter(netns)?;
    let out = f();
    visit.leave()?;
    out
}

/// A TCP listener for one core inside the current namespace: SO_REUSEPORT so every core binds
/// its own, not transparent (the pod's rules REDIRECT, which needs no IP_TRANSPARENT).
pub fn pod_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    crate::sys::socket::listener(
        addr,
        crate::sys::socket::ListenOpts {
            transparent: false,
            reuse_port: true,
            backlog,
        },
    )
}

/// The DNS proxy's sockets for one core inside one pod (or the node): the UDP socket and TCP
/// listener on the proxy's address (SO_REUSEPORT, one per core), and the UDP socket forwarded
/// queries leave from (marked, so the capture rules let it out).
#[derive(Debug)]
pub struct DnsSockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
    pub upstream: std::net::UdpSocket,
}

/// [`DnsSockets`] in the current namespace, bound to `addr`; forwards leave marked `mark`
/// (0: unmarked), from an IPv4 or IPv6 socket as `addr` is. `transparent`: the TCP listener
/// takes TPROXYed connections (node mode).
pub fn dns_sockets(
    addr: SocketAddr,
    backlog: i32,
    mark: u32,
    transparent: bool,
) -> io::Result<DnsSockets> {
    let domain = Domain::for_address(addr);
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Beside the IPv4 socket on the same port, never instead of it.
        udp.set_only_v6(true)?;
    }
    udp.set_reuse_port(true)?;
    udp.set_nonblocking(true)?;
    udp.bind(&addr.into())?;
    let tcp = crate::sys::socket::listener(
        addr,
        crate::sys::socket::ListenOpts {
            transparent,
            reuse_port: true,
            backlog,
        },
    )?;
    let upstream = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    upstream.set_nonblocking(true)?;
    if mark != 0 {
        upstream.set_mark(mark)?;
    }
    let any: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    upstream.bind(&any.into())?;
    Ok(DnsSockets {
        udp: udp.into(),
        tcp,
        upstream: upstream.into(),
    })
}

/// One request: a socket in `netns`, answered to `reply` as [`CoreMail::Upstream`] `id`.
#[derive(Debug)]
struct Request {
    netns: Arc<OwnedFd>,
    ipv6: bool,
    mark: u32,
    id: u64,
    reply: Mailbox,
}

/// Handle on the factory thread; cheap to clone. The thread ends once every handle is gone.
#[derive(Debug, Clone)]
pub struct SocketFactory {
    tx: Sender<Request>,
}

impl SocketFactory {
    /// Starts `zring-podns`.
    pub fn spawn() -> io::Result<SocketFactory> {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("zring-podns".into())
            .spawn(move || run(&rx))?;
        Ok(SocketFactory { tx })
    }

    /// Asks for a TCP socket inside `netns`, marked `mark` (0: unmarked), answered to `reply`.
    /// Never blocks.
    pub(super) fn request(
        &self,
        netns: &PodNetns,
        ipv6: bool,
        mark: u32,
        id: u64,
        reply: &Mailbox,
    ) -> io::Result<()> {
        self.tx
            .send(Request {
                netns: netns.shared_fd(),
                ipv6,
                mark,
                id,
                reply: reply.clone(),
            })
            .map_err(|_| io::Error::other("the pod socket factory has stopped"))
    }
}

fn run(rx: &Receiver<Request>) {
    for req in rx.iter() {
        let socket = in_netns(req.netns.as_fd(), || make(req.ipv6, req.mark));
        if let Err(e) = &socket {
            warn!(error = %e, "cannot create a socket inside a pod's netns");
        }
        // A core that stopped drops the socket with the mail.
        if req
            .reply
            .send(CoreMail::Upstream { id: req.id, socket })
            .is_err()
        {
            debug!(
                core = req.reply.core(),
                "socket for a core that has stopped"
            );
        }
    }
}

fn make(ipv6: bool, mark: u32) -> io::Result<OwnedFd> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if mark != 0 {
        socket.set_mark(mark)?;
    }
    Ok(socket.into())
}
