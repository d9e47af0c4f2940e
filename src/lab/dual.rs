//! IPv6 for a lab: the dual-stack and v6-only variants of the lab topology, laid over the IPv4
//! one [`Lab::new`] and friends build.
//!
//! Runs on the thread that builds a lab, after its nodes and pods exist.
//!
//! Addresses are ULA, derived from the IPv4 plan so tests can name them: node with underlay
//! `172.31.0.N` gets `fd00:31::N/64` on `eth0`; node with pod CIDR `10.244.K.0/24` gets the pod
//! prefix `fd00:244:K::/64`, its gateway `fd00:244:K::1` (the octets written as they read in
//! decimal, so `10.244.1.8` pairs with `fd00:244:1::8`). A pod's IPv6 address is a /128 on its
//! `eth0` behind its node's gateway, like its IPv4 /32.
//!
//! Every address is added `nodad`: Duplicate Address Detection would otherwise keep it
//! "tentative" (unusable as a source) for about a second after it is added.
//!
//! Invariant: only the lab's own namespaces are touched, from the inside (as `ns` promises).

use std::net::Ipv6Addr;

use super::{Lab, LabError, Netns};

/// The IPv6 network of every node's underlay `eth0`.
const UNDERLAY6: &str = "fd00:31::";
const UNDERLAY6_PREFIX: u8 = 64;

/// Sysctls that turn IPv6 on in a namespace (a distribution may turn it off by default).
fn enable(ns: &Netns, forwarding: bool) -> Result<(), LabError> {
    let mut settings = vec![
        ("net.ipv6.conf.all.disable_ipv6", "0"),
        ("net.ipv6.conf.default.disable_ipv6", "0"),
    ];
    if forwarding {
        settings.push(("net.ipv6.conf.all.forwarding", "1"));
    }
    ns.sysctls(&settings)?;
    // Interfaces that existed before: their own switch.
    for dev in ns
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(link_name)
    {
        ns.sysctls(&[(format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")])?;
    }
    Ok(())
}

/// `eth0` from a line of `ip -o link show` (`2: eth0@if5: <…>`).
fn link_name(line: &str) -> Option<String> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next()?.to_owned())
}

/// The decimal octet `n` written as the hex group that reads the same (`11` → `0x11`).
fn group(n: u8) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).expect("decimal digits are hex digits")
}

/// The seed's pods' IPv6 addresses in [`Lab::seed_dual_stack`] and [`Lab::seed_ipv6_only`]:
/// appa `fd00:244:1::8`, appb `fd00:244:2::4` (their IPv4 addresses written in the IPv6 plan).
pub const SEED_APPA6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 8);
pub const SEED_APPB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 4);

impl Lab {
    /// The seed's two-node topology ([`Lab::seed`]) with IPv6 on: appa and appb keep their
    /// IPv4 addresses and get [`SEED_APPA6`] and [`SEED_APPB6`]. Node capture
    /// ([`redirect`](Self::redirect)) installs both families' tables, so this is the node-mode
    /// dual-stack lab as well as the in-pod one.
    pub fn seed_dual_stack() -> Result<Lab, LabError> {
        let mut lab = Lab::seed()?;
        lab.enable_ipv6()?;
        lab.add_pod_ipv6("appa", SEED_APPA6)?;
        lab.add_pod_ipv6("appb", SEED_APPB6)?;
        Ok(lab)
    }

    /// [`seed_dual_stack`](Self::seed_dual_stack) with the pods' IPv4 taken away: the v6-only
    /// lab (the nodes keep IPv4 on their underlay, which nothing of the pods' traffic uses).
    pub fn seed_ipv6_only() -> Result<Lab, LabError> {
        let mut lab = Lab::seed_dual_stack()?;
        lab.remove_pod_ipv4("appa")?;
        lab.remove_pod_ipv4("appb")?;
        Ok(lab)
    }

    /// Turns IPv6 on across the lab built so far: every node gets its ULA underlay address
    /// and routes to every other node's pod prefix (forwarding on), every pod namespace gets
    /// IPv6 enabled (addresses come with [`add_pod_ipv6`](Self::add_pod_ipv6)). Call it once,
    /// after the nodes and pods exist.
    pub fn enable_ipv6(&mut self) -> Result<(), LabError> {
        enable(&self.underlay, false)?;
        for node in &self.nodes {
            enable(&node.netns, true)?;
            let me = self.node_underlay6(&node.name)?;
            node.ip_line(&format!(
                "-6 addr add {me}/{UNDERLAY6_PREFIX} dev eth0 nodad"
            ))?;
        }
        for node in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.name != node.name) {
                let (theirs, via) = (
                    self.pod_prefix6(&other.name)?,
                    self.node_underlay6(&other.name)?,
                );
                node.ip_line(&format!("-6 route add {theirs}/64 via {via} dev eth0"))?;
            }
        }
        for pod in &self.pods {
            enable(&pod.netns, false)?;
        }
        Ok(())
    }

    /// The ULA underlay address of node `node` (see the module doc).
    pub fn node_underlay6(&self, node: &str) -> Result<Ipv6Addr, LabError> {
        let n = self.known_node(node)?;
        let last = n.underlay_ip.octets()[3];
        let base: Ipv6Addr = UNDERLAY6.parse().expect("a constant address");
        let mut s = base.segments();
        s[7] = group(last);
        Ok(Ipv6Addr::from(s))
    }

    /// The /64 IPv6 pod prefix of node `node` (its network address; see the module doc).
    pub fn pod_prefix6(&self, node: &str) -> Result<Ipv6Addr, LabError> {
        let n = self.known_node(node)?;
        let k = n.pod_cidr.addr().octets()[2];
        Ok(Ipv6Addr::new(0xfd00, 0x244, group(k), 0, 0, 0, 0, 0))
    }

    /// The IPv6 gateway of node `node`'s pods: `<pod prefix>::1`.
    pub fn gateway6(&self, node: &str) -> Result<Ipv6Addr, LabError> {
        let mut s = self.pod_prefix6(node)?.segments();
        s[7] = 1;
        Ok(Ipv6Addr::from(s))
    }

    /// Gives pod `pod` the IPv6 address `ip` (a host address of its node's pod prefix, not the
    /// gateway) as a /128 on its `eth0`, routed by its node. [`enable_ipv6`](Self::enable_ipv6)
    /// first.
    pub fn add_pod_ipv6(&mut self, pod: &str, ip: Ipv6Addr) -> Result<(), LabError> {
        let p = self
            .get_pod(pod)
            .ok_or_else(|| LabError::Topology(format!("no pod {pod:?}")))?;
        let (prefix, gateway) = (self.pod_prefix6(&p.node)?, self.gateway6(&p.node)?);
        if ip.segments()[..4] != prefix.segments()[..4] || ip == gateway || ip == prefix {
            return Err(LabError::Topology(format!(
                "pod IPv6 {ip} must be a host address of {prefix}/64 other than the gateway"
            )));
        }
        let node = self.node(&p.node);
        let host_if = &p.host_if;
        // The gateway on every pod's host end (like the IPv4 one); a second pod of the node
        // finds it there already.
        if !node
            .ip(&["-6", "addr", "show", "dev", host_if])?
            .contains(&format!("{gateway}/128"))
        {
            node.ip_line(&format!("-6 addr add {gateway}/128 dev {host_if} nodad"))?;
        }
        node.ip_line(&format!("-6 route add {ip}/128 dev {host_if}"))?;
        p.netns
            .ip_line(&format!("-6 addr add {ip}/128 dev eth0 nodad"))?;
        p.netns
            .ip_line(&format!("-6 route add {gateway} dev eth0"))?;
        p.netns
            .ip_line(&format!("-6 route add default via {gateway} dev eth0"))?;
        Ok(())
    }

    /// Takes IPv4 away from pod `pod` (its address and routes), leaving it IPv6 only: the
    /// v6-only variant of a lab pod. Its [`Pod::ip`](super::Pod::ip) is then unreachable.
    pub fn remove_pod_ipv4(&mut self, pod: &str) -> Result<(), LabError> {
        let p = self
            .get_pod(pod)
            .ok_or_else(|| LabError::Topology(format!("no pod {pod:?}")))?;
        p.netns.ip_line("-4 route flush dev eth0")?;
        p.netns
            .ip_line(&format!("-4 addr del {}/32 dev eth0", p.ip))?;
        Ok(())
    }

    /// The global IPv6 addresses of pod `pod`'s `eth0`, as the namespace shows them.
    pub fn pod_ipv6(&self, pod: &str) -> Result<Vec<Ipv6Addr>, LabError> {
        let p = self
            .get_pod(pod)
            .ok_or_else(|| LabError::Topology(format!("no pod {pod:?}")))?;
        let out = p
            .netns
            .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect())
    }

    fn known_node(&self, node: &str) -> Result<&super::Node, LabError> {
        self.get_node(node)
            .ok_or_else(|| LabError::Topology(format!("no node {node:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octets_read_the_same_in_both_plans() {
        assert_eq!(group(1), 0x1);
        assert_eq!(group(11), 0x11);
        assert_eq!(group(244), 0x244);
        assert_eq!(
            link_name("2: eth0@if5: <BROADCAST> mtu 1500"),
            Some("eth0".into())
        );
        assert_eq!(link_name("1: lo: <LOOPBACK,UP>"), Some("lo".into()));
    }
}
