//! Socket construction for the data plane: transparent listeners and marked, optionally
//! source-spoofing upstream sockets.
//!
//! Runs on the cores (upstream sockets, per connection) and at core start-up (listeners).
//! monoio's own `bind`/`connect` cannot set IP_TRANSPARENT, SO_MARK or bind before connect, so
//! sockets are built with socket2 and handed to monoio with `from_std`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::rng::Rng;

/// Options for a listening socket owned by one core.
#[derive(Debug, Clone, Copy)]
pub struct ListenOpts {
    /// IP_TRANSPARENT: accept connections for addresses that are not local (TPROXY). The
    /// accepted socket's local address is then the original destination.
    pub transparent: bool,
    /// SO_REUSEPORT: every core binds its own socket on the same port and the kernel spreads
    /// connections across them by 4-tuple hash.
    pub reuse_port: bool,
    pub backlog: i32,
}

/// Builds a non-blocking listening socket ready for `monoio::net::TcpListener::from_std`.
pub fn listener(addr: SocketAddr, opts: ListenOpts) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if opts.transparent {
        set_transparent(&socket, addr.is_ipv6())?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog)?;
    Ok(socket.into())
}

/// How an upstream socket presents itself.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamOpts {
    /// Bind this source IP before connecting (IP_TRANSPARENT), so the peer sees the original
    /// client; `None` lets the kernel choose the node's address.
    pub spoof_source: Option<IpAddr>,
    /// SO_MARK for the node's capture rules to skip zring's own traffic; 0 leaves it unset.
    pub mark: u32,
    /// Which side of the node the connection leaves from: decides the source ports a spoofed
    /// source is bound to.
    pub side: SpoofSide,
}

/// The two hops zring spoofs a pod's address on, each with its own source-port range.
///
/// A connection that crosses two nodes is spoofed twice with the same client IP toward the same
/// destination: once by the client's node (outbound) and again by the server's node (inbound),
/// where the first hop's flow arrives captured. Were both hops to draw ports from one range, the
/// second could pick the port of a flow the first made (live, or still in conntrack's
/// TIME_WAIT), and conntrack would take the new SYN for that flow. Disjoint ranges, both below
/// the default ephemeral range pods' own connections use, make those 5-tuples distinct.
///
/// Every spoofed port is **odd**. A pod may widen its own port range over both ranges
/// (`net.ipv4.ip_local_port_range` is a safe sysctl in Kubernetes), and in node mode zring
/// cannot see the pod's sockets, so the kernel cannot refuse a 4-tuple the pod already uses.
/// Linux's `connect()` picks even ports and turns to odd ones only when every even port to that
/// destination is taken (`bind` to port 0 does the reverse, which is why a proxy that binds port
/// 0 never meets its pods' connections). With both parities, the bench's pods (range
/// 1024–65000) met zring's live spoofed connection to the same server about once per 1,600 new
/// connections: node a's conntrack took the pod's SYN for zring's flow, the SYN was lost, and
/// the pod sent it again a second later (against a long-lived flow, again and again: the
/// likely cause of the bench's rare 10-second connect timeouts). What parity cannot cover: a
/// pod that widens its range *and* binds before it connects (its ports are then odd too). In
/// in-pod mode the outbound hop has no such gap: zring's sockets for a pod live in the pod's
/// namespace, where the kernel refuses a 4-tuple already in use and another port is tried. The
/// inbound hop spoofs a remote client, whose sockets zring never sees in either mode: there,
/// parity is the whole protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoofSide {
    /// Leaving toward another node or a local pod on the client's behalf (15001).
    Outbound,
    /// Delivering to a pod on this node (15006, 15008).
    Inbound,
}

impl SpoofSide {
    /// The side's range; only its odd ports are drawn.
    pub fn ports(self) -> std::ops::RangeInclusive<u16> {
        match self {
            SpoofSide::Outbound => 16384..=24575,
            SpoofSide::Inbound => 24576..=32767,
        }
    }
}

/// Starts a non-blocking connect. The returned stream is connecting: the caller waits for
/// writability and then checks [`take_socket_error`].
pub fn start_connect(dst: SocketAddr, opts: UpstreamOpts) -> io::Result<std::net::TcpStream> {
    let Some(src) = opts.spoof_source else {
        return connect_from(dst, opts, None);
    };
    if src.is_ipv6() != dst.is_ipv6() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "source and destination address families differ",
        ));
    }
    // A spoofed source needs an explicit bind. Port 0 would make the kernel search the whole
    // range for a port no socket on this node holds at all, for every connection: under churn
    // from one pod that search dominated the node's CPU. A random port from the side's range
    // (see `SpoofSide`) with SO_REUSEADDR binds at once; the kernel still refuses
    // (EADDRNOTAVAIL) a 4-tuple that is in use, and then another port is tried.
    for _ in 0..SPOOF_PORT_ATTEMPTS {
        let port = random_port(opts.side.ports());
        match connect_from(dst, opts, Some(SocketAddr::new(src, port))) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)
                ) => {}
            other => return other,
        }
    }
    connect_from(dst, opts, Some(SocketAddr::new(src, 0)))
}

/// Random ports tried before leaving the choice to the kernel.
const SPOOF_PORT_ATTEMPTS: usize = 8;

/// An odd port from `range` (see `SpoofSide` for why odd), from a per-thread generator (each
/// core its own).
fn random_port(range: std::ops::RangeInclusive<u16>) -> u16 {
    thread_local! {
        static RNG: std::cell::Cell<Rng> = std::cell::Cell::new(Rng::from_clock());
    }
    let first_odd = range.start() | 1;
    let odd_ports = u64::from(range.end().saturating_sub(first_odd)) / 2 + 1;
    let index = RNG.with(|cell| {
        let mut rng = cell.get();
        let index = rng.below(odd_ports);
        cell.set(rng);
        index
    });
    first_odd + 2 * index as u16
}

/// One connect attempt, bound to `bind` (IP_TRANSPARENT, SO_REUSEADDR) when given.
fn connect_from(
    dst: SocketAddr,
    opts: UpstreamOpts,
    bind: Option<SocketAddr>,
) -> io::Result<std::net::TcpStream> {
    // Non-blocking from birth (SOCK_NONBLOCK): no fcntl pair per connection.
    let ty = Type::STREAM.nonblocking();
    let socket = Socket::new(Domain::for_address(dst), ty, Some(Protocol::TCP))?;
    socket.set_nodelay(true)?;
    if opts.mark != 0 {
        socket.set_mark(opts.mark)?;
    }
    if let Some(addr) = bind {
        set_transparent(&socket, addr.is_ipv6())?;
        if addr.port() != 0 {
            socket.set_reuse_address(true)?;
        }
        socket.bind(&addr.into())?;
    }
    match socket.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Reads and clears SO_ERROR: the outcome of a non-blocking connect once the socket is writable.
pub fn take_socket_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes of the sizes given; a bad fd yields EBADF.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

/// Receives what the socket holds right now into `buf`'s unfilled part, without blocking
/// (`MSG_DONTWAIT`), and marks the bytes that came filled. `Ok(0)` at end of stream or when
/// `buf` has no room; `WouldBlock` when the socket is empty.
pub fn recv_now(fd: RawFd, buf: &mut tokio::io::ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: recv writes only initialised bytes, and only the first `n` of them, which is all
    // this function marks initialised below; nothing is de-initialised.
    let unfilled = unsafe { buf.unfilled_mut() };
    // SAFETY: `unfilled` is writable memory of `unfilled.len()` bytes, and recv writes at most
    // that many; a bad descriptor yields EBADF.
    let n = unsafe {
        libc::recv(
            fd,
            unfilled.as_mut_ptr().cast(),
            unfilled.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised the first `n` bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

/// [`recv_now`] into the spare capacity of `buf`, which grows by the bytes that came.
pub fn recv_into(fd: RawFd, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let mut read = tokio::io::ReadBuf::uninit(spare);
    let n = recv_now(fd, &mut read)?;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (`recv_now` marked
    // exactly those filled).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sends `bufs` in one `sendmsg` without blocking (`MSG_DONTWAIT`; `MSG_NOSIGNAL`: a peer that
/// reset gets `EPIPE`, never a signal). Returns how many bytes the kernel took; `WouldBlock`
/// when the socket's send buffer is full.
pub fn send_now(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std guarantees it).
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    // SAFETY: `msg` points at `msg_iovlen` valid iovecs borrowed for the call, which the
    // kernel only reads; a bad descriptor yields EBADF.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Shuts down the sending direction (FIN once the queued bytes are out). A socket the peer
/// already reset, or that never connected, has nothing to shut: that is not an error here.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes a descriptor and a constant; a bad descriptor yields EBADF.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOTCONN) {
            return Err(e);
        }
    }
    Ok(())
}

/// Closes a socket at once with close(2). Dropping a monoio stream on io_uring queues a CLOSE
/// operation and, because nothing awaits it, an ASYNC_CANCEL of that CLOSE: two ring operations
/// per socket where one system call does the same (the kernel's release of the socket is the
/// same work either way). On epoll it is what the drop does.
///
/// The stream must be its descriptor's only owner, with no operation in flight on it (monoio
/// panics otherwise, and the connection's task ends).
pub fn close_now(stream: monoio::net::TcpStream) {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    // SAFETY: `into_raw_fd` gives up the stream's ownership of the descriptor (on epoll it
    // deregisters it first), so the `OwnedFd` is its only owner and closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) });
}

/// Sets SO_LINGER to zero so that closing the socket sends RST instead of FIN: how a denied or
/// failed connection is refused on plaintext paths.
pub fn set_reset_on_close(fd: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size given; a bad fd yields EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a socket's send and receive buffer sizes past the `net.core.[wr]mem_max` sysctls
/// (`SO_SNDBUFFORCE`, `SO_RCVBUFFORCE`; CAP_NET_ADMIN): tests that need megabytes queued in
/// one socket.
#[cfg(test)]
pub fn force_buffer_sizes(fd: &impl AsRawFd, bytes: libc::c_int) -> io::Result<()> {
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
        // SAFETY: a valid int and its size, on a descriptor the caller holds open.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const bytes).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// IP_TRANSPARENT (IPv4) or IPV6_TRANSPARENT on `socket`: it may bind a foreign source address.
pub fn set_transparent(socket: &Socket, v6: bool) -> io::Result<()> {
    if v6 {
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the duration of the call; the fd is owned by `socket`.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_IPV6,
                libc::IPV6_TRANSPARENT,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    } else {
        socket.set_ip_transparent(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_closed_port_reports_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let s = start_connect(
            addr,
            UpstreamOpts {
                spoof_source: None,
                mark: 0,
                side: SpoofSide::Outbound,
            },
        )
        .unwrap();
        // Wait for the connect to finish without an async runtime.
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let fds = std::slice::from_mut(&mut pfd);
        assert!(poll(fds) > 0);
        let err = take_socket_error(s.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn recv_into_appends_what_the_socket_holds() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        let mut buf = bytes::BytesMut::with_capacity(16);
        buf.extend_from_slice(b"ab");
        let empty = recv_into(rx.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        tx.write_all(b"cdefghijklmnopqrstuvwxyz").unwrap();
        // Blocks until the bytes are there, then takes no more than the spare capacity.
        let mut pfd = libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        assert!(poll(std::slice::from_mut(&mut pfd)) > 0);
        let room = buf.capacity() - buf.len();
        assert_eq!(recv_into(rx.as_raw_fd(), &mut buf).unwrap(), room);
        assert_eq!(&buf[..], &b"abcdefghijklmnopqrstuvwxyz"[..2 + room]);
        drop(tx);
        let mut rest = bytes::BytesMut::with_capacity(64);
        assert_eq!(recv_into(rx.as_raw_fd(), &mut rest).unwrap(), 24 - room);
        assert_eq!(
            recv_into(rx.as_raw_fd(), &mut rest).unwrap(),
            0,
            "end of stream"
        );
    }

    #[test]
    fn family_mismatch_is_rejected() {
        let err = start_connect(
            "[::1]:1".parse().unwrap(),
            UpstreamOpts {
                spoof_source: Some("127.0.0.1".parse().unwrap()),
                mark: 0,
                side: SpoofSide::Outbound,
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn spoof_ports_are_odd_in_disjoint_ranges_below_the_ephemeral_range() {
        let (out, inb) = (SpoofSide::Outbound.ports(), SpoofSide::Inbound.ports());
        assert!(out.end() < inb.start());
        assert!(
            *inb.end() < 32768,
            "pods' own ephemeral ports start at 32768"
        );
        for range in [out, inb] {
            let drawn: std::collections::HashSet<u16> =
                (0..100_000).map(|_| random_port(range.clone())).collect();
            assert!(drawn.iter().all(|p| range.contains(p) && p % 2 == 1));
            // Every odd port of the range comes up: none is wasted.
            assert_eq!(drawn.len(), range.len() / 2, "{range:?}");
        }
        // Ends: an even start is skipped, an odd start and end are drawn.
        assert!((0..1000).all(|_| random_port(4..=5) == 5));
        assert!((0..1000).all(|_| random_port(7..=7) == 7));
    }

    fn poll(fds: &mut [libc::pollfd]) -> i32 {
        // SAFETY: test-only; `fds` is a valid slice of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5000) }
    }
}
