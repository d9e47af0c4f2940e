//! The original destination of a connection that netfilter's nat REDIRECT (or DNAT) rewrote:
//! in-pod capture redirects a pod's traffic to 15001/15006 inside its netns, so the accepted
//! socket's local address is the proxy's own port and the address the pod meant comes from
//! conntrack (`SO_ORIGINAL_DST`). TPROXY capture needs none of this: its local address is the
//! original one.
//!
//! IPv6: a connection accepted on an `AF_INET6` socket (in-pod listeners bind `[::]` v6-only
//! beside `0.0.0.0`) asks `IP6T_SO_ORIGINAL_DST` at level `SOL_IPV6` instead, which answers a
//! `sockaddr_in6` ([`original_dst_any_of`] picks by the socket's own family).
//!
//! Runs on whichever thread accepted the connection; one or two getsockopts, no allocation.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// The IPv4 destination the connection accepted on `fd` had before nat rewrote it. A connection
/// conntrack tracks but nat left alone answers its own local address; one conntrack does not
/// track at all (no nat rules in its netns) fails with ENOENT.
pub fn original_dst(fd: BorrowedFd<'_>) -> io::Result<SocketAddrV4> {
    original_dst_raw(fd.as_raw_fd())
}

/// [`original_dst`] for a socket type that offers only `AsRawFd` (monoio's `TcpStream`): the
/// borrow keeps the descriptor open for the call.
pub fn original_dst_of(socket: &impl AsRawFd) -> io::Result<SocketAddrV4> {
    original_dst_raw(socket.as_raw_fd())
}

/// `IP6T_SO_ORIGINAL_DST` (linux/netfilter_ipv6/ip6_tables.h): same number as the IPv4
/// option, asked at level `SOL_IPV6`.
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The original destination of a connection accepted on `socket`, IPv4 or IPv6 as the socket
/// is (a v6-only listener's connections are IPv6; a v4 one's IPv4).
pub fn original_dst_any_of(socket: &impl AsRawFd) -> io::Result<SocketAddr> {
    let fd = socket.as_raw_fd();
    if socket_family(fd)? == libc::AF_INET6 {
        original_dst6_raw(fd).map(SocketAddr::V6)
    } else {
        original_dst_raw(fd).map(SocketAddr::V4)
    }
}

/// The address family of the socket `fd` (`SO_DOMAIN`).
fn socket_family(fd: RawFd) -> io::Result<libc::c_int> {
    let mut family: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `family` and `len` are writable and alive across the call; the kernel writes at
    // most `len` bytes (one int).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut family).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(family)
}

fn original_dst6_raw(fd: RawFd) -> io::Result<SocketAddrV6> {
    // SAFETY: sockaddr_in6 is plain data for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_in6 = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are writable and alive across the call; the kernel writes at most
    // `len` bytes into `addr`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IPV6,
            IP6T_SO_ORIGINAL_DST,
            (&raw mut addr).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if addr.sin6_family != libc::AF_INET6 as libc::sa_family_t {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "IP6T_SO_ORIGINAL_DST answered a non-IPv6 address",
        ));
    }
    Ok(SocketAddrV6::new(
        Ipv6Addr::from(addr.sin6_addr.s6_addr),
        u16::from_be(addr.sin6_port),
        0,
        0,
    ))
}

fn original_dst_raw(fd: RawFd) -> io::Result<SocketAddrV4> {
    // SAFETY: sockaddr_in is plain data for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are writable and alive across the call; the kernel writes at most
    // `len` bytes into `addr`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&raw mut addr).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if addr.sin_family != libc::AF_INET as libc::sa_family_t {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST answered a non-IPv4 address",
        ));
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn an_untracked_connection_has_no_original_destination() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        // The test's own netns loads no nat rules, so conntrack does not track loopback here:
        // nothing to report (ENOENT), never a made-up address.
        assert!(original_dst(s.as_fd()).is_err());
    }

    #[test]
    fn an_untracked_ipv6_connection_has_no_original_destination_either() {
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            panic!("IPv6 loopback unavailable: this test needs IPv6 enabled");
        };
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(socket_family(s.as_raw_fd()).unwrap(), libc::AF_INET6);
        // The IPv6 form is asked (never the IPv4 one, which would not fit an AF_INET6 socket).
        assert!(original_dst_any_of(&s).is_err());
    }
}
