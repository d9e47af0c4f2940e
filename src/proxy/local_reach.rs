//! Node mode: no new reach through passthrough. A captured connection to an address zring knows
//! nothing about (`route::Action::Passthrough`) is re-originated by zring in the node's own
//! network namespace, from the pod's address (`IP_TRANSPARENT`), not forwarded. The lab showed
//! what that takes away (`tests/passthrough_local.rs`):
//!
//! - **Hop limits.** A server that answers with an IP TTL of 1 (cloud metadata services do, e.g.
//!   AWS IMDSv2's PUT response, so that a container one routing hop behind the node cannot
//!   read it) is out of a pod's reach without zring: the node decrements the TTL when it
//!   forwards the answer and drops it. Through zring's passthrough the answer is delivered to
//!   zring's socket on the node, never forwarded, and zring relays the bytes to the pod.
//! - **FORWARD-chain filters.** The pod's packets no longer cross the node's forward hook; zring's
//!   upstream packets leave through output. A `forward` rule dropping pod traffic to
//!   169.254.169.254 stops a pod outside the mesh and did not stop an enrolled one. This holds for
//!   every passthrough destination: egress filters meant for pods belong in `postrouting`, which
//!   both paths cross (zring keeps the pod's source address), or must also match zring's
//!   mark in `output`.
//!
//! So in node mode [`check`] refuses passthrough to link-local addresses (169.254.0.0/16,
//! fe80::/10: metadata services, NodeLocal DNSCache's 169.254.20.10), loopback, the unspecified
//! address and the node's own addresses (what `OwnAddrs` holds, kept current by the control
//! thread), each of which would reach the node itself or something only the node should reach.
//! The refusal resets the client and is recorded with `response_flags="PASSTHROUGH_LOCAL"`.
//! `ZRING_PASSTHROUGH_ALLOW_LOCAL=true` restores the old behaviour for nodes whose pods must
//! reach such addresses through the mesh's capture. In-pod mode re-originates inside the pod's
//! own namespace, so nothing is new there and nothing is refused.
//!
//! Pure; called from one place, `outbound::prepare`, on a core.

use std::net::{IpAddr, SocketAddr};

use super::{Capture, Error};
use crate::net::own::OwnAddrs;

/// Refuses, in node mode and unless `allow_local`, a passthrough to `to` when `to` is
/// link-local, loopback, unspecified or one of the node's own addresses (`own`).
pub fn check(
    capture: &Capture,
    allow_local: bool,
    own: &OwnAddrs,
    to: SocketAddr,
) -> Result<(), Error> {
    if allow_local || !matches!(capture, Capture::Node) {
        return Ok(());
    }
    if is_local(own, to.ip()) {
        return Err(Error::LocalPassthrough(to));
    }
    Ok(())
}

/// Whether `ip` reaches the node itself or its links rather than a network beyond it.
pub fn is_local(own: &OwnAddrs, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    link_local || ip.is_loopback() || ip.is_unspecified() || own.ips().contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_destinations_are_refused_in_node_mode_only() {
        let own = OwnAddrs::node([
            "172.31.0.11".parse().unwrap(),
            "10.244.1.1".parse().unwrap(),
        ]);
        let refused = [
            "169.254.169.254:80",
            "169.254.20.10:53",
            "[fe80::1]:80",
            "127.0.0.1:8080",
            "[::1]:80",
            "0.0.0.0:80",
            "172.31.0.11:10250",
            "10.244.1.1:80",
            "[::ffff:169.254.169.254]:80",
        ];
        for to in refused {
            let to: SocketAddr = to.parse().unwrap();
            let e = check(&Capture::Node, false, &own, to).unwrap_err();
            assert_eq!(e.report().flags, "PASSTHROUGH_LOCAL", "{to}");
            assert!(check(&Capture::Node, true, &own, to).is_ok(), "{to}");
        }
        for to in [
            "172.31.0.12:80",
            "10.244.2.9:80",
            "93.184.216.34:443",
            "[2001:db8::1]:80",
        ] {
            let to: SocketAddr = to.parse().unwrap();
            assert!(check(&Capture::Node, false, &own, to).is_ok(), "{to}");
        }
    }
}
