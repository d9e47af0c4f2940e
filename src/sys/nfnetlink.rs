//! Netlink sockets subscribed to change notifications in this network namespace, whoever made
//! the change: nf_tables' (`NFNLGRP_NFTABLES`, what `nft monitor` listens to: one message per
//! table, chain, rule, set or element added or deleted) and rtnetlink's policy routing (rules
//! and routes of both families, what `ip monitor rule route` listens to).
//!
//! Used by the capture watch (`capture::watch`) on the capture-set keeper's thread: it drains
//! the sockets without blocking once per tick and hands each datagram to a pure parser. Opened
//! in the namespace of the calling thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Receive buffer asked of the kernel: a `nft flush ruleset` on a node with kube-proxy's and a
/// CNI's tables sends a burst of messages; an overflow is reported (and handled as "something
/// changed"), not fatal.
const RCVBUF: libc::c_int = 1 << 20;

/// rtnetlink's multicast groups for IPv4 and IPv6 routes and rules (`RTNLGRP_IPV4_ROUTE`,
/// `RTNLGRP_IPV4_RULE`, `RTNLGRP_IPV6_ROUTE`, `RTNLGRP_IPV6_RULE` in `linux/rtnetlink.h`),
/// all below 32, so the bind-time group mask reaches them.
const RTNLGRP_POLICY_ROUTING: [u32; 4] = [7, 8, 11, 19];

/// A subscribed socket and a datagram buffer.
#[derive(Debug)]
pub struct Events {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Events {
    /// Opens a socket subscribed to nf_tables' notifications (non-blocking, close-on-exec).
    /// Needs CAP_NET_ADMIN in the namespace, as `nft` does.
    pub fn open() -> io::Result<Events> {
        Events::subscribe(libc::NETLINK_NETFILTER, 1 << (libc::NFNLGRP_NFTABLES - 1))
    }

    /// Opens a socket subscribed to rule and route changes of both families (no privilege
    /// needed to listen).
    pub fn policy_routing() -> io::Result<Events> {
        let groups = RTNLGRP_POLICY_ROUTING
            .iter()
            .fold(0u32, |mask, group| mask | 1 << (group - 1));
        Events::subscribe(libc::NETLINK_ROUTE, groups)
    }

    fn subscribe(protocol: libc::c_int, groups: u32) -> io::Result<Events> {
        // SAFETY: plain socket(2) with constant arguments; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor socket(2) just returned to us and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (port 0: the kernel
        // assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: `addr` is a valid sockaddr_nl and the length given is its size.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        let size = RCVBUF;
        // SAFETY: `size` is a c_int that lives across the call; its size is passed. A failure
        // only leaves the default buffer, so the result is ignored.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(Events {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Reads every datagram waiting, without blocking, handing each to `each`. `Ok(true)` when
    /// the kernel dropped notifications since the last call (the socket overflowed): the caller
    /// cannot know what changed.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<bool> {
        let mut lost = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length for the duration of the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast::<libc::c_void>(),
                    self.buf.len(),
                    0,
                )
            };
            if n >= 0 {
                let n = usize::try_from(n).unwrap_or(0);
                each(&self.buf[..n.min(self.buf.len())]);
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(lost),
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS) => lost = true,
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening needs CAP_NET_ADMIN (the tests run as root); with nothing pending the drain
    /// returns at once, nothing lost.
    #[test]
    fn drains_without_blocking() {
        let mut events = Events::open().expect("netlink socket (needs root)");
        let lost = events.drain(|_| ()).expect("drain");
        assert!(!lost);
        let mut routing = Events::policy_routing().expect("rtnetlink socket");
        let lost = routing.drain(|_| ()).expect("drain");
        assert!(!lost);
    }
}
