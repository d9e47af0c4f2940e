//! `Cidr`: an IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`) as authorization policies use it
//! for `sourceIps` / `destinationIps`. Pure; built by the config sources, read by every core.
//!
//! Invariants:
//! - the stored address is the network address: host bits are cleared at construction, so two
//!   spellings of the same network compare equal and `contains` is a single masked compare;
//! - the prefix length never exceeds the family's width (32 or 128).
//!
//! Decisions (each tested below):
//! - a bare address (`10.1.2.3`, `fd00::1`) is a host route (`/32`, `/128`), as Istio's
//!   `ipBlocks` accept single addresses;
//! - host bits set (`10.1.2.3/8`) are accepted and cleared, not rejected: ztunnel's matcher
//!   ignores host bits too, so rejecting would turn a config ztunnel runs into one we refuse;
//! - `contains` compares IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) as the IPv4 address
//!   they carry, because a dual-stack socket reports IPv4 peers in that form;
//! - the prefix is decimal digits only (no sign, no spaces), at most three of them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network: address plus prefix length, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string or an (address, length) pair is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    // No variant quotes the input: callers quote it (cut short) with the object it belongs to.
    #[error("the address is not an IP address")]
    Address,
    #[error("the prefix length is not a decimal number")]
    PrefixSyntax,
    #[error("prefix length {prefix} is longer than {max} bits")]
    PrefixTooLong { prefix: u32, max: u8 },
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits; host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = family_bits(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong {
                prefix: u32::from(prefix),
                max,
            });
        }
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Ok(Cidr { network, prefix })
    }

    /// The host route for one address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            network: addr,
            prefix: family_bits(addr),
        }
    }

    /// Parses `addr/prefix` or a bare address (see the module doc for the accepted forms).
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| CidrError::Address)?;
        match prefix {
            None => Ok(Cidr::host(addr)),
            Some(p) => {
                // u32::from_str would accept "+8"; only plain digits are a prefix.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::PrefixSyntax);
                }
                let n: u32 = p.parse().map_err(|_| CidrError::PrefixSyntax)?;
                let max = family_bits(addr);
                match u8::try_from(n) {
                    Ok(n) if n <= max => Cidr::new(addr, n),
                    _ => Err(CidrError::PrefixTooLong { prefix: n, max }),
                }
            }
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. A v4 network never contains a v6 address and the
    /// reverse, except IPv4-mapped IPv6 addresses, which count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn family_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

// `checked_shl` because shifting a u32 by 32 overflows: prefix 0 is the all-zero mask.
fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalizes() {
        let cases: &[(&str, &str)] = &[
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"), // host bits cleared
            ("10.1.2.3", "10.1.2.3/32"),  // bare address is a host route
            ("10.1.2.3/32", "10.1.2.3/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("255.255.255.255/0", "0.0.0.0/0"),
            ("192.168.1.129/25", "192.168.1.128/25"),
            ("fd00::/8", "fd00::/8"),
            ("fd12:3456::1/16", "fd12::/16"),
            ("fd00::1", "fd00::1/128"),
            ("fd00::1/128", "fd00::1/128"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
            ("10.0.0.0/008", "10.0.0.0/8"),
        ];
        for (input, want) in cases {
            let c = Cidr::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(c.to_string(), *want, "{input}");
        }
        assert_eq!(
            Cidr::parse("10.1.2.3/8").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap()
        );
    }

    #[test]
    fn rejects_bad_input() {
        let cases: &[(&str, &str)] = &[
            ("", "not an IP address"),
            ("/8", "not an IP address"),
            ("10.0.0/8", "not an IP address"),
            ("10.0.0.256/8", "not an IP address"),
            ("fe80::1%eth0/64", "not an IP address"),
            (" 10.0.0.0/8", "not an IP address"),
            ("10.0.0.0/", "not a decimal number"),
            ("10.0.0.0/+8", "not a decimal number"),
            ("10.0.0.0/-1", "not a decimal number"),
            ("10.0.0.0/8 ", "not a decimal number"),
            ("10.0.0.0/1234", "not a decimal number"),
            ("10.0.0.0/8/8", "not a decimal number"),
            ("10.0.0.0/33", "longer than 32 bits"),
            ("10.0.0.0/999", "longer than 32 bits"),
            ("fd00::/129", "longer than 128 bits"),
        ];
        for (input, want) in cases {
            let err = Cidr::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        assert!(Cidr::new(ip("10.0.0.0"), 33).is_err());
        assert!(Cidr::new(ip("::"), 129).is_err());
    }

    #[test]
    fn contains_v4() {
        let c = Cidr::parse("10.244.0.0/16").unwrap();
        assert!(c.contains(ip("10.244.0.0")));
        assert!(c.contains(ip("10.244.255.255")));
        assert!(!c.contains(ip("10.245.0.0")));
        assert!(!c.contains(ip("10.243.255.255")));
        assert!(
            c.contains(ip("::ffff:10.244.1.2")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!c.contains(ip("fd00::1")));

        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("0.0.0.0")) && all.contains(ip("255.255.255.255")));
        assert!(
            !all.contains(ip("::1")),
            "a v4 network never contains a v6 address"
        );

        let host = Cidr::parse("10.1.2.3/32").unwrap();
        assert!(host.contains(ip("10.1.2.3")));
        assert!(!host.contains(ip("10.1.2.4")));
    }

    #[test]
    fn contains_v6() {
        let c = Cidr::parse("fd00:10::/32").unwrap();
        assert!(c.contains(ip("fd00:10::1")));
        assert!(c.contains(ip("fd00:10:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!c.contains(ip("fd00:11::")));
        assert!(!c.contains(ip("10.0.0.1")));

        let all = Cidr::parse("::/0").unwrap();
        assert!(all.contains(ip("::")) && all.contains(ip("ffff::1")));
        assert!(!all.contains(ip("10.0.0.1")), "::/0 does not swallow IPv4");
        // A mapped address is compared as IPv4, so a v6 network does not contain it.
        assert!(!all.contains(ip("::ffff:10.0.0.1")));

        let host = Cidr::parse("fd00::1/128").unwrap();
        assert!(host.contains(ip("fd00::1")));
        assert!(!host.contains(ip("fd00::2")));
    }

    /// Property test without a dependency: random networks and addresses from a fixed-seed
    /// generator, checked against a bit-by-bit reference.
    #[test]
    fn contains_matches_bitwise_reference() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fn bits(ip: IpAddr) -> (u128, u32) {
            match ip {
                IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
                IpAddr::V6(a) => (u128::from(a), 128),
            }
        }
        for i in 0..20_000 {
            let v6 = i % 2 == 1;
            let random_ip = |r: u64, r2: u64| -> IpAddr {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from((u128::from(r) << 64) | u128::from(r2)))
                } else {
                    IpAddr::V4(Ipv4Addr::from(r as u32))
                }
            };
            let base = random_ip(next(), next());
            let max = if v6 { 129 } else { 33 };
            let prefix = (next() % max) as u8;
            let cidr = Cidr::new(base, prefix).unwrap();
            // Half the probes share the prefix with `base` by construction.
            let probe = if next() % 2 == 0 {
                let (b, w) = bits(base);
                let (r, _) = bits(random_ip(next(), next()));
                let keep = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (w - u32::from(prefix))
                };
                let width_mask = if w == 128 {
                    u128::MAX
                } else {
                    (1u128 << w) - 1
                };
                let v = ((b & keep) | (r & !keep)) & width_mask;
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(v))
                } else {
                    IpAddr::V4(Ipv4Addr::from(v as u32))
                }
            } else {
                random_ip(next(), next())
            };
            let (n, w) = bits(cidr.network());
            let (p, _) = bits(probe);
            let reference = (0..u32::from(prefix)).all(|bit| {
                let shift = w - 1 - bit;
                (n >> shift) & 1 == (p >> shift) & 1
            });
            // Mapped addresses are compared as IPv4; the generator's v6 probes almost never
            // hit ::ffff:0:0/96, and when they do the reference does not apply.
            if probe.to_canonical() != probe {
                continue;
            }
            assert_eq!(cidr.contains(probe), reference, "{cidr} contains {probe}");
            assert_eq!(
                Cidr::parse(&cidr.to_string()).unwrap(),
                cidr,
                "display round trip"
            );
        }
    }
}
