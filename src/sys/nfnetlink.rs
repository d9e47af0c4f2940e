//! A netlink socket subscribed to nf_tables' change notifications (`NFNLGRP_NFTABLES`, what
//! `nft monitor` listens to): the kernel sends one message per table, chain, rule, set or
//! element added or deleted in this network namespace, whoever made the change.
//!
//! Used by the capture watch (`capture::watch`) on the capture-set keeper's thread: it drains
//! the socket without blocking once per tick and hands each datagram to a pure parser. Opened
//! in the namespace of the calling thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Receive buffer asked of the kernel: a `nft flush ruleset` on a node with kube-proxy's and a
/// CNI's tables sends a burst of messages; an overflow is reported (and handled as "something
/// changed"), not fatal.
const RCVBUF: libc::c_int = 1 << 20;

/// The subscribed socket and a datagram buffer.
#[derive(Debug)]
pub struct NftEvents {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl NftEvents {
    /// Opens the socket (non-blocking, close-on-exec) and joins the nf_tables group. Needs
    /// CAP_NET_ADMIN in the namespace, as `nft` does.
    pub fn open() -> io::Result<NftEvents> {
        // SAFETY: plain socket(2) with constant arguments; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
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
        addr.nl_groups = 1 << (libc::NFNLGRP_NFTABLES - 1);
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
        Ok(NftEvents {
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
        let mut events = NftEvents::open().expect("netlink socket (needs root)");
        let lost = events.drain(|_| ()).expect("drain");
        assert!(!lost);
    }
}
