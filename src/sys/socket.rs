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
}

/// Starts a non-blocking connect. The returned stream is connecting: the caller waits for
/// writability and then checks [`take_socket_error`].
pub fn start_connect(dst: SocketAddr, opts: UpstreamOpts) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if opts.mark != 0 {
        socket.set_mark(opts.mark)?;
    }
    if let Some(src) = opts.spoof_source {
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination address families differ",
            ));
        }
        set_transparent(&socket, src.is_ipv6())?;
        // Port 0: the kernel picks an ephemeral port for the spoofed address.
        socket.bind(&SocketAddr::new(src, 0).into())?;
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

fn set_transparent(socket: &Socket, v6: bool) -> io::Result<()> {
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
    fn family_mismatch_is_rejected() {
        let err = start_connect(
            "[::1]:1".parse().unwrap(),
            UpstreamOpts {
                spoof_source: Some("127.0.0.1".parse().unwrap()),
                mark: 0,
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    fn poll(fds: &mut [libc::pollfd]) -> i32 {
        // SAFETY: test-only; `fds` is a valid slice of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5000) }
    }
}
