//! The rules kube-proxy installs on a node for ClusterIP services, in its two Linux modes, so a
//! lab node can carry them beside zring's capture: most clusters run kube-proxy, and its NAT
//! meets zring's TPROXY on every pod's connection to a service VIP.
//!
//! A small, faithful subset, written from kube-proxy's documented behaviour (its
//! `pkg/proxy/iptables` and `pkg/proxy/nftables` proxiers), not copied:
//!
//! - [`Mode::Iptables`]: what iptables-nft puts in the kernel for kube-proxy's iptables mode:
//!   `table ip nat` with the built-in chains `PREROUTING` and `OUTPUT` (nat, priority -100:
//!   dstnat; nft 1.0.6 accepts the name only on prerouting)
//!   jumping to `KUBE-SERVICES`, and `POSTROUTING` (srcnat) to `KUBE-POSTROUTING`;
//!   `KUBE-SERVICES` matches `VIP:port/tcp` and jumps to the service's `KUBE-SVC-<hash>`, which
//!   marks traffic from outside the cluster CIDR for masquerade (`KUBE-MARK-MASQ`: mark |=
//!   0x4000) and picks one `KUBE-SEP-<hash>` per endpoint with probabilities 1/n, 1/(n-1), … 1
//!   (iptables' `-m statistic --mode random`; here `numgen random`, the same draw); each
//!   `KUBE-SEP` marks hairpin traffic (an endpoint reaching itself) for masquerade and DNATs to
//!   `endpoint:port`. `KUBE-POSTROUTING` masquerades marked packets and clears the mark. Written
//!   as nft text (no `iptables` binary needed); iptables-nft's own translation of the same rules
//!   uses the same hooks, priorities and NAT statements.
//! - [`Mode::Nftables`]: kube-proxy's own `table ip kube-proxy`: base chains `nat-prerouting`
//!   and `nat-output` (nat, dstnat) jump to `services`, which looks `daddr . l4proto . dport`
//!   up in the verdict map `service-ips` and goes to `service-<hash>-<ns>/<name>/tcp/<port
//!   name>`; that chain marks for masquerade as above and picks an endpoint chain with
//!   `numgen random mod n vmap`; `endpoint-<hash>-…__<ip>/<port>` marks hairpins and DNATs;
//!   `nat-postrouting` (srcnat) → `masquerading`.
//!
//! Left out: NodePorts, external and load-balancer IPs, session affinity, traffic policies,
//! kube-proxy's filter chains (services without endpoints, firewall source ranges) and UDP.
//! Every DNAT rule carries a counter, so a test can tell whether kube-proxy's NAT touched a
//! flow (iptables-nft counts every rule anyway).
//!
//! Pure text; [`crate::lab::Lab::kube_proxy`] installs it in a node, replacing what was there.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::capture::Cidr;

/// Which of kube-proxy's Linux modes to model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Iptables,
    Nftables,
}

/// One ClusterIP service port (TCP) and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<SocketAddrV4>,
}

/// The masquerade mark kube-proxy uses (its `--masquerade-bit` 14).
pub const MASQ_MARK: u32 = 0x4000;

/// The `nft -f` script that replaces the node's kube-proxy rules of `mode` with `services`;
/// `cluster_cidrs` are the pod networks (kube-proxy's `--cluster-cidr`).
pub fn script(mode: Mode, services: &[Service], cluster_cidrs: &[Cidr]) -> String {
    let table = match mode {
        Mode::Iptables => "nat",
        Mode::Nftables => "kube-proxy",
    };
    let body = match mode {
        Mode::Iptables => iptables(services, cluster_cidrs),
        Mode::Nftables => nftables(services, cluster_cidrs),
    };
    format!("add table ip {table}\ndelete table ip {table}\n{body}")
}

fn cidrs(cluster_cidrs: &[Cidr]) -> String {
    let list: Vec<String> = cluster_cidrs.iter().map(Cidr::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// A stable, name-safe digest (kube-proxy hashes with SHA-256 and base32; any stable hash
/// serves the lab): 16 characters of A-Z and 2-7.
fn hash(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..16)
        .map(|_| {
            let c = ALPHABET[(h & 31) as usize] as char;
            h = h.rotate_right(5) ^ 0x9e37_79b9_7f4a_7c15;
            c
        })
        .collect()
}

fn iptables(services: &[Service], cluster_cidrs: &[Cidr]) -> String {
    let masq = format!("{MASQ_MARK:#x}");
    let mut s = String::new();
    let mut w = |line: String| writeln!(s, "{line}").expect("writing to a String");
    w("table ip nat {".into());
    for (chain, hook, priority, target) in [
        ("PREROUTING", "prerouting", "dstnat", "KUBE-SERVICES"),
        ("OUTPUT", "output", "-100", "KUBE-SERVICES"),
        ("POSTROUTING", "postrouting", "srcnat", "KUBE-POSTROUTING"),
    ] {
        w(format!("\tchain {chain} {{"));
        w(format!(
            "\t\ttype nat hook {hook} priority {priority}; policy accept;"
        ));
        w(format!("\t\tcounter jump {target}"));
        w("\t}".into());
    }
    w("\tchain KUBE-MARK-MASQ {".into());
    w(format!("\t\tmeta mark set meta mark or {masq}"));
    w("\t}".into());
    w("\tchain KUBE-POSTROUTING {".into());
    w(format!("\t\tmeta mark & {masq} == 0 return"));
    w(format!("\t\tmeta mark set meta mark xor {masq}"));
    w("\t\tmasquerade fully-random".into());
    w("\t}".into());
    let mut dispatch = Vec::new();
    for svc in services {
        let id = format!("{}/{}:{}/tcp", svc.namespace, svc.name, svc.port);
        let svc_chain = format!("KUBE-SVC-{}", hash(&id));
        let (vip, port) = (svc.vip, svc.port);
        dispatch.push(format!(
            "\t\tmeta l4proto tcp ip daddr {vip} tcp dport {port} counter jump {svc_chain}"
        ));
        w(format!("\tchain {svc_chain} {{"));
        w(format!(
            "\t\tmeta l4proto tcp ip saddr != {} ip daddr {vip} tcp dport {port} counter jump KUBE-MARK-MASQ",
            cidrs(cluster_cidrs)
        ));
        let n = svc.endpoints.len();
        for (i, ep) in svc.endpoints.iter().enumerate() {
            let sep = format!("KUBE-SEP-{}", hash(&format!("{id}/{ep}")));
            // Endpoint i of n is taken with probability 1/(n-i) among those left: uniform.
            let draw = if i + 1 < n {
                format!("numgen random mod {} 0 ", n - i)
            } else {
                String::new()
            };
            w(format!("\t\t{draw}counter jump {sep}"));
        }
        w("\t}".into());
        for ep in &svc.endpoints {
            let sep = format!("KUBE-SEP-{}", hash(&format!("{id}/{ep}")));
            w(format!("\tchain {sep} {{"));
            w(format!(
                "\t\tip saddr {} counter jump KUBE-MARK-MASQ",
                ep.ip()
            ));
            w(format!("\t\tmeta l4proto tcp counter dnat to {ep}"));
            w("\t}".into());
        }
    }
    w("\tchain KUBE-SERVICES {".into());
    for line in dispatch {
        w(line);
    }
    w("\t}".into());
    w("}".into());
    s
}

fn nftables(services: &[Service], cluster_cidrs: &[Cidr]) -> String {
    let masq = format!("{MASQ_MARK:#x}");
    let mut s = String::new();
    let mut w = |line: String| writeln!(s, "{line}").expect("writing to a String");
    w("table ip kube-proxy {".into());
    w("\tcomment \"rules for kube-proxy\"".into());
    w("\tchain mark-for-masquerade {".into());
    w(format!("\t\tmeta mark set meta mark or {masq}"));
    w("\t}".into());
    w("\tchain masquerading {".into());
    w(format!("\t\tmeta mark & {masq} == 0 return"));
    w(format!("\t\tmeta mark set meta mark xor {masq}"));
    w("\t\tmasquerade fully-random".into());
    w("\t}".into());
    let mut elements = Vec::new();
    for svc in services {
        let port_id = format!("{}/{}/tcp/", svc.namespace, svc.name);
        let svc_chain = format!("service-{}-{port_id}", &hash(&port_id)[..8]);
        let (vip, port) = (svc.vip, svc.port);
        elements.push(format!("{vip} . tcp . {port} : goto {svc_chain}"));
        let ep_chains: Vec<String> = svc
            .endpoints
            .iter()
            .map(|ep| {
                let ep_id = format!("{port_id}__{}/{}", ep.ip(), ep.port());
                format!("endpoint-{}-{ep_id}", &hash(&ep_id)[..8])
            })
            .collect();
        w(format!("\tchain {svc_chain} {{"));
        w(format!(
            "\t\tip daddr {vip} tcp dport {port} ip saddr != {} jump mark-for-masquerade",
            cidrs(cluster_cidrs)
        ));
        if !ep_chains.is_empty() {
            let arms: Vec<String> = ep_chains
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{i} : goto {c}"))
                .collect();
            w(format!(
                "\t\tnumgen random mod {} vmap {{ {} }}",
                ep_chains.len(),
                arms.join(", ")
            ));
        }
        w("\t}".into());
        for (ep, chain) in svc.endpoints.iter().zip(&ep_chains) {
            w(format!("\tchain {chain} {{"));
            w(format!("\t\tip saddr {} jump mark-for-masquerade", ep.ip()));
            w(format!("\t\tmeta l4proto tcp counter dnat to {ep}"));
            w("\t}".into());
        }
    }
    w("\tmap service-ips {".into());
    w("\t\ttype ipv4_addr . inet_proto . inet_service : verdict".into());
    if !elements.is_empty() {
        w(format!("\t\telements = {{ {} }}", elements.join(", ")));
    }
    w("\t}".into());
    w("\tchain services {".into());
    w("\t\tip daddr . meta l4proto . th dport vmap @service-ips".into());
    w("\t}".into());
    for (chain, hook, priority, target) in [
        ("nat-prerouting", "prerouting", "dstnat", "services"),
        ("nat-output", "output", "-100", "services"),
        ("nat-postrouting", "postrouting", "srcnat", "masquerading"),
    ] {
        w(format!("\tchain {chain} {{"));
        w(format!(
            "\t\ttype nat hook {hook} priority {priority}; policy accept;"
        ));
        w(format!("\t\tjump {target}"));
        w("\t}".into());
    }
    w("}".into());
    s
}

/// Packets every DNAT rule of kube-proxy's table in `listing` (`nft list table …`) counted,
/// summed: how many connections kube-proxy's NAT rewrote.
pub fn dnat_packets(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.contains(" dnat to "))
        .filter_map(|l| {
            let rest = &l[l.find("counter packets ")? + "counter packets ".len()..];
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appb() -> Vec<Service> {
        vec![Service {
            namespace: "default".into(),
            name: "appb".into(),
            vip: Ipv4Addr::new(10, 96, 101, 203),
            port: 8000,
            endpoints: vec![
                "10.244.2.4:80".parse().unwrap(),
                "10.244.2.5:80".parse().unwrap(),
            ],
        }]
    }

    fn cidrs() -> Vec<Cidr> {
        vec!["10.244.1.0/24".parse().unwrap()]
    }

    #[test]
    fn iptables_mode_has_kube_proxys_chains_and_uniform_endpoints() {
        let text = script(Mode::Iptables, &appb(), &cidrs());
        assert!(text.starts_with("add table ip nat\ndelete table ip nat\ntable ip nat {"));
        for needle in [
            "chain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat;",
            "chain OUTPUT {\n\t\ttype nat hook output priority -100;",
            "counter jump KUBE-SERVICES",
            "ip daddr 10.96.101.203 tcp dport 8000 counter jump KUBE-SVC-",
            "ip saddr != { 10.244.1.0/24 } ip daddr 10.96.101.203",
            "numgen random mod 2 0 counter jump KUBE-SEP-",
            "counter dnat to 10.244.2.4:80",
            "counter dnat to 10.244.2.5:80",
            "masquerade fully-random",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
    }

    #[test]
    fn nftables_mode_dispatches_through_the_service_ips_map() {
        let text = script(Mode::Nftables, &appb(), &cidrs());
        assert!(text.starts_with("add table ip kube-proxy\ndelete table ip kube-proxy\n"));
        for needle in [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "10.96.101.203 . tcp . 8000 : goto service-",
            "-default/appb/tcp/",
            "numgen random mod 2 vmap { 0 : goto endpoint-",
            "__10.244.2.5/80",
            "chain nat-output {\n\t\ttype nat hook output priority -100;",
            "meta l4proto tcp counter dnat to 10.244.2.4:80",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
    }

    #[test]
    fn dnat_counters_add_up() {
        let listing = "\t\tmeta l4proto tcp counter packets 3 bytes 180 dnat to 10.244.2.4:80\n\
                       \t\tcounter packets 9 bytes 1 jump KUBE-SERVICES\n\
                       \t\tmeta l4proto tcp counter packets 2 bytes 120 dnat to 10.244.2.5:80\n";
        assert_eq!(dnat_packets(listing), 5);
    }
}
