//! IP networks, `addr/prefix`: [`Cidr`] (IPv4: the pod CIDRs capture matches, and the lab's
//! node and underlay networks) and [`Cidr6`] (a dual-stack or IPv6-only cluster's IPv6 pod
//! networks). Pure.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::Error;

/// An IPv4 network, `addr/prefix`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`; fails if `prefix > 32` or `addr` has host bits set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Cidr, Error> {
        let cidr = Cidr { addr, prefix };
        if prefix > 32 || u32::from(addr) & !cidr.mask() != 0 {
            return Err(Error::Topology(format!(
                "{addr}/{prefix} is not a network address"
            )));
        }
        Ok(cidr)
    }

    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(self, other: Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The first host address: the pods' gateway, held by the node.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// The last address of the network.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Cidr, Error> {
        let bad = || Error::Topology(format!("{s:?} is not an IPv4 CIDR"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        Cidr::new(
            addr.parse().map_err(|_| bad())?,
            prefix.parse().map_err(|_| bad())?,
        )
    }
}

/// An IPv6 network, `addr/prefix`, with no host bits set: a cluster's IPv6 pod network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr6 {
    addr: Ipv6Addr,
    prefix: u8,
}

impl Cidr6 {
    /// `addr/prefix`; fails if `prefix > 128` or `addr` has host bits set.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Cidr6, Error> {
        let mask = 128u32
            .checked_sub(u32::from(prefix))
            .map(|host| u128::MAX.checked_shl(host).unwrap_or(0));
        if mask.is_none_or(|m| u128::from(addr) & !m != 0) {
            return Err(Error::Topology(format!(
                "{addr}/{prefix} is not a network address"
            )));
        }
        Ok(Cidr6 { addr, prefix })
    }

    pub fn addr(self) -> Ipv6Addr {
        self.addr
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr6 {
    type Err = Error;

    fn from_str(s: &str) -> Result<Cidr6, Error> {
        let bad = || Error::Topology(format!("{s:?} is not an IPv6 CIDR"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        Cidr6::new(
            addr.parse().map_err(|_| bad())?,
            prefix.parse().map_err(|_| bad())?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_computes() {
        let c: Cidr = "10.244.1.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert!(c.contains(Ipv4Addr::new(10, 244, 1, 8)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 2, 8)));
        assert!(c.overlaps("10.244.0.0/16".parse().unwrap()));
        assert!(!c.overlaps("10.244.2.0/24".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(Ipv4Addr::new(1, 2, 3, 4))
        );
    }

    #[test]
    fn cidr6_parses_and_rejects() {
        let c: Cidr6 = "fd00:244:1::/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:244:1::/64");
        assert_eq!(c.prefix(), 64);
        assert_eq!("::/0".parse::<Cidr6>().unwrap().prefix(), 0);
        for bad in [
            "fd00:244:1::1/64",
            "fd00::/129",
            "10.244.1.0/24",
            "fd00::",
            "x/64",
        ] {
            assert!(bad.parse::<Cidr6>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_rejects_host_bits_and_garbage() {
        for bad in [
            "10.244.1.1/24",
            "10.244.1.0/33",
            "10.244.1.0",
            "x/24",
            "10.244.1.0/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
