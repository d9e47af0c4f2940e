//! Where a captured connection would reach zring itself: zring's ports on the addresses it
//! listens on. The routing decision (`proxy::route`) refuses such connections; the control
//! thread keeps the node's addresses current in `core::Shared` (node mode), and the in-pod
//! data path builds the pod's set per connection.
//!
//! Pure data, no IO: a leaf that both `core` (which holds the node's set) and `proxy` (which
//! checks it) can name.

use std::net::{IpAddr, SocketAddr};

use crate::config::OWN_PORTS;

/// The ports zring listens on inside an enrolled pod's netns (in-pod mode).
pub const POD_PORTS: [u16; 3] = [15001, 15006, 15008];

/// Where a captured connection would reach zring itself: its ports on loopback, on the
/// unspecified address (which connects to the host itself) and on the addresses given.
/// Node mode: [`OwnAddrs::node`] with this node's addresses (the control thread keeps them
/// current); in-pod mode: [`OwnAddrs::pod`] with the pod's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnAddrs {
    ips: Vec<IpAddr>,
    ports: &'static [u16],
}

impl OwnAddrs {
    /// Node mode: zring's six ports ([`OWN_PORTS`]) on loopback and on `ips`, the node's own
    /// addresses.
    pub fn node(ips: impl IntoIterator<Item = IpAddr>) -> OwnAddrs {
        OwnAddrs::new(ips, &OWN_PORTS)
    }

    /// In-pod mode: the proxy ports zring opens inside the pod ([`POD_PORTS`]) on loopback and
    /// on `ips`, the pod's own addresses.
    pub fn pod(ips: impl IntoIterator<Item = IpAddr>) -> OwnAddrs {
        OwnAddrs::new(ips, &POD_PORTS)
    }

    fn new(ips: impl IntoIterator<Item = IpAddr>, ports: &'static [u16]) -> OwnAddrs {
        let mut ips: Vec<IpAddr> = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        ips.sort_unstable();
        ips.dedup();
        OwnAddrs { ips, ports }
    }

    /// The addresses given (loopback and unspecified are implied).
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Whether a connection to `addr` would reach zring itself.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        if !self.ports.contains(&addr.port()) {
            return false;
        }
        let ip = addr.ip().to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.ips.binary_search(&ip).is_ok()
    }
}

/// Loopback only, with zring's six ports: what node mode refuses before it knows the node's
/// addresses.
impl Default for OwnAddrs {
    fn default() -> OwnAddrs {
        OwnAddrs::node([])
    }
}
