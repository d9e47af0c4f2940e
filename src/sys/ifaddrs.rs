//! The IP addresses of this network namespace's interfaces (`getifaddrs`): in node mode, the
//! addresses at which a captured connection would reach zring itself.
//!
//! Runs on the control thread (start-up, then a periodic refresh); one system call and a walk of
//! the list it returns.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every IPv4 and IPv6 address assigned to an interface of the calling thread's netns, in the
/// kernel's order (duplicates possible: an address on two interfaces).
pub fn interface_addrs() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid place for the kernel's list pointer; on success the list is
    // ours until `freeifaddrs`.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cur };
        if let Some(ip) = sockaddr_ip(entry.ifa_addr) {
            out.push(ip);
        }
        cur = entry.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; nothing borrowed
    // from it outlives this call (addresses were copied out).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP address in `sa`, if it is an IPv4 or IPv6 socket address.
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null `ifa_addr` points at a sockaddr whose family field is always valid.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: the family says the storage behind `sa` is a sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage behind `sa` is a sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_addresses() {
        let addrs = interface_addrs().unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
