//! Node-level traffic capture: the nftables ruleset and policy routing that send pod traffic to
//! zring's listeners the way Istio ambient's node-level (TPROXY) capture does, for a real node
//! (`zring redirect`, which the DaemonSet in `deploy/` runs) and for a lab node
//! (`lab::Lab::redirect`). Both install the same text from [`ruleset`]; only the [`Capture`]
//! parameters differ (pod CIDRs, the pod-interface pattern), so the lab's proof of every rule
//! covers what a node gets. Production code: the lab builds on it, never the reverse.
//!
//! Modules: `cidr` (the IPv4 and IPv6 networks pods live in), `cmd` (finding and running `ip` and `nft`,
//! which the lab uses too), `enrolled` (the enrolled-pod set and the thread that keeps it),
//! `watch` (on that thread: notices a removed or altered ruleset, restores it, holds readiness).
//!
//! [`Scope::EveryPodAddress`] is the lab's other shape, the rules before the set existed:
//! every address of the pod CIDRs is captured (outbound from any pod interface, inbound from
//! anywhere but a pod interface or `lo`), and the node's own traffic is not. Tests whose
//! workloads speak plain TCP behind zring nodes, and node proxies that keep no set, use it.
//!
//! Runs on the thread that calls [`install`] (a test's, `zring redirect`'s main thread);
//! [`ruleset`] is pure text, so it is unit-tested as text, and the integration tests
//! (`tests/lab.rs`) prove every rule against the kernel through the per-rule counters
//! ([`counters`]).
//!
//! # What each piece is for
//!
//! zring listens in the node namespace with `IP_TRANSPARENT` on 15001 (outbound capture), 15006
//! (inbound plaintext) and 15008 (inbound HBONE). Its upstream sockets carry `SO_MARK 0x539` and
//! usually bind the *client pod's* IP with `IP_TRANSPARENT` (source spoofing), so the pod at the
//! far end sees the real client.
//!
//! Below, `zp*` is the lab's pod-interface pattern and "the set" `ztunnel-pods-ips`: this
//! node's *enrolled* pods (redirected into the mesh by istiod's `protocol: HBONE`, not pods that
//! terminate HBONE themselves), which zring keeps in step with its snapshot (`enrolled`, the
//! seed's ipset of the same name). Everything else (pods outside the mesh, sidecars, waypoints,
//! gateways) passes untouched. A real node substitutes its CNI's interface pattern.
//!
//! - `set ztunnel-pods-ips` (`ipv4_addr`): created empty by [`install`]; zring adds and deletes
//!   elements. Re-installing the table empties it; zring notices and refills it.
//! - `output`, `meta mark 0x539 → ct mark set 0x539` (rule `zring-conn`): remembers on the
//!   connection that zring opened it. The answers to a spoofed connection are addressed to a pod
//!   IP, which the node would otherwise *forward* to that pod, who never sent the SYN and resets
//!   it. The socket mark is on outgoing packets only; the conntrack mark is on both directions.
//! - `host-output` (route, priority filter), `host-to-pod`: TCP the node's own namespace sends
//!   (hostNetwork pods, any local process) to an enrolled pod, not from zring (mark 0x539), in
//!   the connection's original direction → mark 0x111. The mark makes the kernel route the
//!   packet again, through table 133 to `lo`, where it enters prerouting and the inbound rules
//!   hand it to zring like traffic from another node: inbound policy applies. The original
//!   direction only: the packets zring's accepted sockets send back to a local pod (an
//!   outbound capture's answers) carry no mark and are in the reply direction. Priority filter
//!   runs after the nat output hook, so a service VIP kube-proxy DNATs to a local pod is seen
//!   with the pod's address. The kubelet is not excepted: in node mode no packet-level fact
//!   tells it from a hostNetwork pod (both are root processes of the node's namespace; Istio's
//!   in-pod rule exempts *every* node-originated connection by SNATing it to 169.254.7.127,
//!   which is the bypass this rule closes), so a pod's policies must allow its probes from the
//!   node, as they must for any other plaintext client.
//! - Policy routing `fwmark 0x111 lookup 133` + `local 0.0.0.0/0 dev lo table 133`: a packet
//!   marked 0x111 in prerouting is delivered locally whatever its destination address, which is
//!   what lets a transparent socket receive packets for addresses the node does not own.
//! - `prerouting` (filter, priority mangle), in order:
//!   1. `reply-to-zring`: TCP whose ct mark is 0x539 → mark 0x111. Replies to zring's own
//!      spoofing connections come back to zring instead of being forwarded to the pod whose IP
//!      zring borrowed. Mark 0x539 itself must never route locally: zring's *outgoing* packets
//!      carry it and would loop back into the node.
//!   2. `captured-flow`: `socket transparent 1 socket wildcard 0` → mark 0x111. Later packets
//!      of flows already held by a transparent socket (a captured connection, or one zring
//!      spoofs) go straight to that socket, and unlike rule 1 this also covers a transparent
//!      socket opened without zring's mark, and a flow whose pod has left the set since.
//!      `socket wildcard 0` is essential: nft's `socket`
//!      lookup (unlike iptables' `-m socket`, which skips wildcard listeners unless given
//!      `--nowildcard`) also finds *listeners*, so without it a pod's SYN to a remote `:15008`
//!      matched zring's own `0.0.0.0:15008` listener on the pod's node and skipped outbound
//!      capture, and a SYN from outside to `pod:15001` landed on the outbound listener
//!      (`tests/lab.rs` checks the first).
//!   3. `outbound`: TCP in from a pod interface (`iifname "zp*"`) whose source is in the set →
//!      TPROXY to :15001.
//!   4. `inbound-hbone`: other TCP to an address in the set, port 15008 → TPROXY to :15008. From
//!      anywhere: another node, `lo` (the node itself, see `host-to-pod`), or a local pod that is
//!      not enrolled (its own connections were not taken by rule 3).
//!   5. `inbound-plaintext`: other TCP to an address in the set → TPROXY to :15006.
//!
//!   Each capture rule is followed by a `reject with tcp reset` for the same traffic. nft's
//!   `tproxy` (unlike iptables' `TPROXY` target, which drops) falls through to the next rule when
//!   nothing listens on its port; without the rejects a node whose zring is down, or still
//!   starting, forwards pod traffic around the mesh unencrypted and without policy (the tests saw
//!   appa's SYN leave node a), and HBONE traffic would land on the plaintext listener. Failing
//!   closed with a reset matches Istio's capture (no listener, no traffic) and fails fast instead
//!   of timing out.
//!
//! What the kernel showed about rules 1 and 2: in the seed topology, the end-to-end test still
//! passes with both removed, because a TPROXY rule first looks up an *established* socket for the
//! packet's 4-tuple and hands the packet to it: replies to node a's spoofed sockets arrive on
//! `eth0` for a node-a pod IP (rule 5 catches them), replies from a local pod arrive on its `zp`
//! interface (rule 3). Rules 1 and 2 are kept, ahead of the TPROXY rules, so that delivery to
//! zring's own sockets does not depend on the address-based capture rules (a pod IP outside the
//! node's pod CIDR, a spoofed source that is not a local pod) and takes one conntrack-mark
//! compare or one socket lookup. Reverse-path filtering is off everywhere (see `lab::ns`), although
//! the seed's symmetric paths also pass with strict `rp_filter=1`.
//!
//! - `nat-prerouting` (nat, priority dstnat − 10), `keep-destination`: a new TCP flow marked
//!   0x111 (one the rules above hand to zring) gets an identity DNAT (`dnat ip to ip daddr`).
//!   This is what makes capture work beside kube-proxy. Its service rules (`KUBE-SERVICES` in
//!   `table ip nat`, or `table ip kube-proxy`'s `services` map; both nat chains at priority
//!   dstnat, see `lab::kubeproxy`) DNAT a pod's SYN to a service VIP to one endpoint. Prerouting
//!   runs mangle (−150) before dstnat (−100), so without this rule the TPROXY rule counted the
//!   SYN and assigned it to the 15001 listener, and the DNAT then rewrote its destination: the
//!   kernel showed every connection from appa to the VIP reset at connect and zring never
//!   accepting one (`tests/nodecap.rs` fails exactly so with the rule removed), and had it been
//!   accepted zring would have seen the endpoint, not the VIP, so service waypoints and
//!   policies could not apply. The kernel consults nat chains only for a flow's first packet
//!   and, per hook, stops at the first chain that sets up a NAT binding (`nf_nat_inet_fn`); an
//!   identity DNAT in a chain that runs before kube-proxy's is such a binding, so kube-proxy's
//!   chains never see captured flows, whatever their mode or content (the `KUBE-MARK-MASQ`
//!   0x4000 bit, which would also spoil our exact fwmark 0x111 match, is never set on them),
//!   while everything not captured (pods outside the set, zring's own upstream connections in
//!   the output hook: its passthrough to an unknown VIP still goes through kube-proxy) is NATed
//!   as before. Preferred over `notrack` in a raw chain, which would have to pick the flows
//!   before conntrack (priority −300) cannot tell a pod's new connection from a pod's answer to
//!   zring's spoofed one (rule 1 needs conntrack for those), and would take conntrack away from
//!   the node's firewall for them; and over a mark kube-proxy respects, which does not exist in
//!   its service chains.
//!
//! # IPv6 (dual stack and IPv6-only clusters)
//!
//! IPv6 gets the same capture in a table of its own, `table ip6 zring` ([`ruleset6`]), rule for
//! rule with the same comments, marks and order: its own set `ztunnel-pods-ips` (`ipv6_addr`,
//! kept by the same keeper from the v6 addresses of the same workloads), `ip6 saddr`/`ip6
//! daddr` matches, TPROXY to zring's IPv6 listeners (`[::]:15001`, `[::]:15006`,
//! `[::]:15008`, v6-only sockets beside the IPv4 ones) and the identity DNAT written `dnat ip6
//! to ip6 daddr`; DNS capture (when on) redirects v6 DNS to `[::]:15053`, so the node side of
//! each pod's veth needs an IPv6 address as it needs an IPv4 one for v4 DNS. IPv6 policy
//! routing mirrors IPv4's: `ip -6 rule add fwmark 0x111 lookup 133` and `ip -6 route replace
//! local ::/0 dev lo table 133`. Two family tables rather than one `inet` table: the IPv4 table
//! stays exactly what it was (its text, counters and the rules kube-proxy's `ip` tables are
//! ordered against), and each family's set is typed. Without IPv6 capture a dual-stack pod's v6
//! connections would leave the node unencrypted and without policy.
//!
//! [`install`] adds the IPv6 half wherever the kernel has IPv6 ([`ipv6_available`]: `ip -6`
//! answers), so a node booted with `ipv6.disable=1` still gets its IPv4 capture. The watch and
//! the keeper use the same test, and treat a missing `ip6` table, set or route like a missing
//! `ip` one.
//!
//! `IPV6_ENABLED=false` (ztunnel's switch) turns the IPv6 half off whatever the kernel has:
//! `zring redirect` installs `table ip zring` alone (and takes away an `ip6` one an earlier
//! install left), the keeper fills and watches only the IPv4 set, and node mode opens no `[::]`
//! listener ([`dual_stack`]). Pods' IPv6 traffic then passes the node untouched, as it does
//! past ztunnel with the same setting.
//!
//! Invariant: the ruleset lives in its own tables (`table ip zring`, `table ip6 zring`) and is
//! replaced atomically (`nft -f` runs the deletes and the new tables as one transaction), so
//! re-applying it never leaves a half-installed capture.

mod cidr;
pub(crate) mod cmd;
pub mod enrolled;
pub mod watch;

use std::fmt::Write as _;

pub use cidr::{Cidr, Cidr6};

/// Everything that can go wrong preparing or installing capture. The texts predate the move
/// out of the lab (they were `lab::LabError`'s) and are kept as they were.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the lab needs `{program}` on PATH (install the {package} package)")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    #[error("`{command}` failed ({status}): {stderr}{}", input_note(stdin.as_deref()))]
    Command {
        command: String,
        status: String,
        stderr: String,
        stdin: Option<String>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A CIDR or capture parameter that cannot be used.
    #[error("bad lab topology: {0}")]
    Topology(String),
}

/// The input a failed command was fed (an nft script), shown after its error.
fn input_note(stdin: Option<&str>) -> String {
    stdin
        .map(|s| format!("\ninput was:\n{s}"))
        .unwrap_or_default()
}

/// zring's outbound capture listener.
pub const OUTBOUND_PORT: u16 = 15001;
/// zring's inbound plaintext listener.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// zring's inbound HBONE listener.
pub const INBOUND_HBONE_PORT: u16 = 15008;
/// zring's DNS proxy (UDP and TCP).
pub const DNS_PORT: u16 = 15053;
/// `SO_MARK` on zring's own upstream sockets (1337, ztunnel's `PACKET_MARK`).
pub const ZRING_MARK: u32 = 0x539;
/// Packet mark that policy routing delivers locally.
pub const CAPTURE_MARK: u32 = 0x111;
/// Routing table holding the `local 0.0.0.0/0 dev lo` route.
pub const CAPTURE_TABLE: u32 = 133;
/// Name of the nftables tables (families `ip` and `ip6`).
pub const TABLE: &str = "zring";
/// The pod-interface pattern of lab nodes (`zp-<pod>`, `zp<hash>`).
pub const LAB_POD_INTERFACES: &str = "zp*";
/// The nftables set (in `table ip zring`, and its IPv6 twin in `table ip6 zring`) of this
/// node's enrolled pod IPs, named after the seed's ipset. [`install`] creates it empty; zring fills it from its snapshot
/// (`capture::enrolled`).
pub const POD_SET: &str = "ztunnel-pods-ips";

/// Which pods capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This node's enrolled pods: the addresses in [`POD_SET`]. What real nodes get.
    Enrolled,
    /// Every address of the pod CIDRs (the set is still declared, unused; no host traffic): the lab's worlds where
    /// workloads that speak plain TCP sit behind a zring node and are captured anyway.
    EveryPodAddress,
}

/// An address family capture has a table for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both, IPv4 first (the order tables are written and listed in).
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The nftables family of the table, and the keyword of its address matches.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The family of `ip`.
    pub fn of(ip: std::net::IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn set_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// `ip` arguments' family switch.
    fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }
}

/// What a node's capture is shaped by: where its pods' addresses are and which interfaces lead
/// to them. The lab passes its node's pod CIDR and `zp*`; a real node passes its cluster's pod
/// CIDRs and its CNI's interface prefix (`veth*`, `cali*`, `lxc*`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The cluster's pod networks (at least one). Only [`Scope::EveryPodAddress`] matches on
    /// them; with [`Scope::Enrolled`] they are a checked statement of where pods live, which
    /// `zring redirect` still requires so a node's parameters stay the same.
    pub pod_cidrs: Vec<Cidr>,
    /// An nft `iifname` pattern matching every pod interface on the node.
    pub pod_interfaces: String,
    /// The cluster's IPv6 pod networks (dual-stack and IPv6-only clusters). Like
    /// `pod_cidrs`, matched only with [`Scope::EveryPodAddress`] (where none means the IPv6
    /// table falls back to the set).
    pub pod_cidrs6: Vec<Cidr6>,
    /// Whether `table ip6 zring` and IPv6 policy routing come with the IPv4 ones (true unless
    /// the kernel has no IPv6: [`install`] checks).
    pub ipv6: bool,
    /// Enrolled pods only (the default), or every pod address.
    pub scope: Scope,
    /// Whether the pods' DNS (UDP and TCP to port 53) goes to zring's DNS proxy on
    /// [`DNS_PORT`]: TCP by TPROXY like outbound (rule `dns-tcp`), UDP by a REDIRECT in the
    /// nat hook (`dns-udp`, before kube-proxy's chains: the answers are un-NATed by
    /// conntrack, so the pod sees them from the address it asked). REDIRECT sends to the pod
    /// interface's own address, so the node side of a pod's veth must hold an IPv4 address
    /// (the lab's do; a CNI whose veths have none needs a DNAT to a node address instead).
    pub dns: bool,
}

impl Capture {
    /// Capture for pods in `pod_cidrs` behind interfaces matching `pod_interfaces`; fails on an
    /// empty CIDR list or a pattern that is not a plain interface name with an optional
    /// trailing `*` (the pattern is spliced into nft's text, so nothing else may pass).
    pub fn new(pod_cidrs: Vec<Cidr>, pod_interfaces: &str) -> Result<Capture, Error> {
        Capture::dual(pod_cidrs, Vec::new(), pod_interfaces)
    }

    /// [`new`](Self::new) with IPv6 pod networks too; one of the two lists may be empty (an
    /// IPv6-only or IPv4-only cluster), not both.
    pub fn dual(
        pod_cidrs: Vec<Cidr>,
        pod_cidrs6: Vec<Cidr6>,
        pod_interfaces: &str,
    ) -> Result<Capture, Error> {
        let name = pod_interfaces.strip_suffix('*').unwrap_or(pod_interfaces);
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if name.is_empty() || name.len() > 15 || !plain {
            return Err(Error::Topology(format!(
                "pod interface pattern {pod_interfaces:?}: use an interface name or prefix \
                 (letters, digits, - _ .), optionally ending in *"
            )));
        }
        if pod_cidrs.is_empty() && pod_cidrs6.is_empty() {
            return Err(Error::Topology("no pod CIDR given".into()));
        }
        Ok(Capture {
            pod_cidrs,
            pod_interfaces: pod_interfaces.to_owned(),
            pod_cidrs6,
            ipv6: true,
            scope: Scope::Enrolled,
            dns: false,
        })
    }

    /// From text, as `zring redirect` takes it: comma-separated CIDRs of either family
    /// (`10.244.0.0/16,fd00:244::/48`) and one pattern.
    pub fn parse(pod_cidrs: &str, pod_interfaces: &str) -> Result<Capture, Error> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for c in pod_cidrs
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if c.contains(':') {
                v6.push(c.parse::<Cidr6>()?);
            } else {
                v4.push(c.parse::<Cidr>()?);
            }
        }
        Capture::dual(v4, v6, pod_interfaces.trim())
    }

    /// A lab node's capture: its pod CIDR, behind `zp*` interfaces.
    pub fn lab(pod_cidr: Cidr) -> Capture {
        Capture {
            pod_cidrs: vec![pod_cidr],
            pod_interfaces: LAB_POD_INTERFACES.to_owned(),
            pod_cidrs6: Vec::new(),
            ipv6: true,
            scope: Scope::Enrolled,
            dns: false,
        }
    }

    /// The same capture with these IPv6 pod networks.
    pub fn with_cidrs6(self, pod_cidrs6: Vec<Cidr6>) -> Capture {
        Capture { pod_cidrs6, ..self }
    }

    /// The same capture with or without its IPv6 half.
    pub fn with_ipv6(self, ipv6: bool) -> Capture {
        Capture { ipv6, ..self }
    }

    /// The families this capture has tables for.
    pub fn families(&self) -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|f| *f == Family::V4 || self.ipv6)
            .collect()
    }

    /// The same capture with the pods' DNS sent to zring's DNS proxy, or not.
    pub fn with_dns(self, dns: bool) -> Capture {
        Capture { dns, ..self }
    }

    /// The same capture with another [`Scope`].
    pub fn with_scope(self, scope: Scope) -> Capture {
        Capture { scope, ..self }
    }

    /// The pod CIDRs of `family` as nft writes a match on them: one network, or an anonymous
    /// set; `None` when there is none.
    fn pods(&self, family: Family) -> Option<String> {
        let list: Vec<String> = match family {
            Family::V4 => self.pod_cidrs.iter().map(Cidr::to_string).collect(),
            Family::V6 => self.pod_cidrs6.iter().map(Cidr6::to_string).collect(),
        };
        match list.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(format!("{{ {} }}", many.join(", "))),
        }
    }
}

/// The `table ip zring` definition for a node with `capture`'s pods and interfaces.
pub fn ruleset(capture: &Capture) -> String {
    ruleset_of(capture, Family::V4)
}

/// The `table ip6 zring` definition: [`ruleset`]'s rules for IPv6 (see the module doc).
pub fn ruleset6(capture: &Capture) -> String {
    ruleset_of(capture, Family::V6)
}

/// Every table `capture` installs, IPv4 first.
pub fn tables(capture: &Capture) -> String {
    capture
        .families()
        .into_iter()
        .map(|f| ruleset_of(capture, f))
        .collect()
}

/// One family's table.
fn ruleset_of(capture: &Capture, family: Family) -> String {
    let fam = family.nft();
    let m = format!("{ZRING_MARK:#x}");
    let c = format!("{CAPTURE_MARK:#x}");
    let capture_set = format!("meta mark set {c} counter accept");
    let reset = "counter reject with tcp reset";
    let ifaces = &capture.pod_interfaces;
    // Who counts as a pod: this node's enrolled pods (the set zring keeps), or (lab scope)
    // every address of the pod CIDRs, arriving from anywhere but a pod interface or `lo`.
    // An IPv6 table without IPv6 pod CIDRs falls back to the set in the lab's scope.
    let cidrs = capture.pods(family);
    let (from_pod, to_pod) = match (capture.scope, cidrs) {
        (Scope::Enrolled, _) | (Scope::EveryPodAddress, None) => (
            format!(r#"iifname "{ifaces}" {fam} saddr @{POD_SET}"#),
            format!("{fam} daddr @{POD_SET}"),
        ),
        (Scope::EveryPodAddress, Some(cidrs)) => (
            format!(r#"iifname "{ifaces}""#),
            format!(r#"iifname != "lo" iifname != "{ifaces}" {fam} daddr {cidrs}"#),
        ),
    };
    let outside = format!("{to_pod} meta l4proto tcp");
    let hbone = INBOUND_HBONE_PORT;
    let mut s = String::new();
    let mut line = |text: String| writeln!(s, "{text}").expect("writing to a String");
    line(format!("table {fam} {TABLE} {{"));
    line(format!("\tset {POD_SET} {{"));
    line(format!("\t\ttype {}", family.set_type()));
    line("\t}".into());
    line("\tchain output {".into());
    line("\t\ttype route hook output priority mangle; policy accept;".into());
    line(format!(
        r#"		meta mark {m} ct mark set {m} counter comment "zring-conn""#
    ));
    line("\t}".into());
    if capture.scope == Scope::Enrolled {
        line("\tchain host-output {".into());
        line("\t\ttype route hook output priority filter; policy accept;".into());
        line(format!(
            r#"		meta l4proto tcp meta mark != {m} ct direction original {fam} daddr @{POD_SET} meta mark set {c} counter comment "host-to-pod""#
        ));
        line("\t}".into());
    }
    line("\tchain prerouting {".into());
    line("\t\ttype filter hook prerouting priority mangle; policy accept;".into());
    line(format!(
        r#"		meta l4proto tcp ct mark {m} {capture_set} comment "reply-to-zring""#
    ));
    line(format!(
        r#"		meta l4proto tcp socket transparent 1 socket wildcard 0 {capture_set} comment "captured-flow""#
    ));
    if capture.dns {
        line(format!(
            r#"		{from_pod} tcp dport 53 tproxy to :{DNS_PORT} {capture_set} comment "dns-tcp""#
        ));
    }
    line(format!(
        r#"		{from_pod} meta l4proto tcp tproxy to :{OUTBOUND_PORT} {capture_set} comment "outbound""#
    ));
    line(format!(
        r#"		{from_pod} meta l4proto tcp {reset} comment "outbound-closed""#
    ));
    line(format!(
        r#"		{outside} tcp dport {hbone} tproxy to :{hbone} {capture_set} comment "inbound-hbone""#
    ));
    line(format!(
        r#"		{outside} tcp dport {hbone} {reset} comment "inbound-hbone-closed""#
    ));
    line(format!(
        r#"		{outside} tproxy to :{INBOUND_PLAINTEXT_PORT} {capture_set} comment "inbound-plaintext""#
    ));
    line(format!(
        r#"		{outside} {reset} comment "inbound-plaintext-closed""#
    ));
    line("\t}".into());
    line("\tchain nat-prerouting {".into());
    line("\t\ttype nat hook prerouting priority dstnat - 10; policy accept;".into());
    line(format!(
        r#"		meta l4proto tcp meta mark {c} counter dnat {fam} to {fam} daddr comment "keep-destination""#
    ));
    if capture.dns {
        line(format!(
            r#"		{from_pod} udp dport 53 counter redirect to :{DNS_PORT} comment "dns-udp""#
        ));
    }
    line("\t}".into());
    line("}".into());
    s
}

/// The whole `nft -f` script: drop any previous `table ip zring` (and `table ip6 zring`), then
/// define them anew, in one transaction (`add` first so the `delete` cannot fail on a node
/// without the table).
pub fn script(capture: &Capture) -> String {
    let mut s = String::new();
    for f in capture.families() {
        let fam = f.nft();
        s.push_str(&format!(
            "add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n"
        ));
    }
    s + &tables(capture)
}

/// The policy routing capture needs, as `ip` arguments: marked packets are delivered locally.
pub fn policy_routing() -> [String; 2] {
    policy_routing_of(Family::V4)
}

/// [`policy_routing`] for IPv6 (`-6` arguments).
pub fn policy_routing6() -> [String; 2] {
    policy_routing_of(Family::V6)
}

fn policy_routing_of(family: Family) -> [String; 2] {
    let (flag, any) = (family.ip_flag(), family.any());
    let flag = if family == Family::V4 { "" } else { flag };
    [
        format!("{flag} rule add fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}")
            .trim_start()
            .to_owned(),
        format!("{flag} route replace local {any} dev lo table {CAPTURE_TABLE}")
            .trim_start()
            .to_owned(),
    ]
}

/// Whether the kernel at `place` has IPv6 (`ip -6 rule show` answers; a kernel booted with
/// `ipv6.disable=1` refuses the family), so capture can have its IPv6 half.
pub fn ipv6_available(place: Place<'_>) -> bool {
    place.ip("-6 rule show").is_ok()
}

/// Where node mode listens for what capture sends to `addr`: `addr`, and when it is the IPv4
/// wildcard, `ipv6_enabled` (`IPV6_ENABLED`) and this process's namespace has IPv6, the IPv6
/// wildcard on the same port too (a v6-only socket beside the IPv4 one: the `ip6` table's
/// TPROXY rules deliver there, and a v4 connection keeps plain v4 addresses rather than
/// `::ffff:` mapped ones). With IPv6 turned off there is no `ip6` table to deliver anything,
/// so no IPv6 socket either, as ztunnel then binds `0.0.0.0` instead of `[::]`.
pub fn dual_stack(addr: std::net::SocketAddr, ipv6_enabled: bool) -> Vec<std::net::SocketAddr> {
    let mut out = vec![addr];
    if ipv6_enabled && addr.ip() == std::net::Ipv4Addr::UNSPECIFIED && kernel_has_ipv6() {
        out.push((std::net::Ipv6Addr::UNSPECIFIED, addr.port()).into());
    }
    out
}

/// Whether this process's namespace takes IPv6 sockets: a throwaway v6-only TCP socket bound
/// to `[::]:0`. A kernel without IPv6 refuses the family or the address.
fn kernel_has_ipv6() -> bool {
    let any = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    let probe = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None);
    probe.is_ok_and(|s| s.set_only_v6(true).is_ok() && s.bind(&any.into()).is_ok())
}

/// Where capture is installed: a named network namespace (a lab node's), or the namespace this
/// process runs in (a real node's, for `zring redirect`).
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    Netns(&'a str),
    Here,
}

impl Place<'_> {
    fn nft(self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        match self {
            Place::Netns(ns) => cmd::nft_in(ns, args, stdin),
            Place::Here => cmd::run(cmd::program(cmd::NFT), args, stdin),
        }
    }

    fn ip(self, line: &str) -> Result<String, Error> {
        let args: Vec<&str> = line.split_whitespace().collect();
        match self {
            Place::Netns(ns) => cmd::ip_in(ns, &args),
            Place::Here => cmd::run(cmd::program(cmd::IP), &args, None),
        }
    }
}

/// Installs capture at `place`: the nft tables (replacing older ones atomically) and the policy
/// routes; the IPv6 half only where the kernel has IPv6. Idempotent: an `ip rule` is added only
/// if it is not there yet. Returns the capture installed (`ipv6` off if IPv6 was missing).
///
/// A capture without its IPv6 half (`IPV6_ENABLED=false`) also takes away an IPv6 half left by
/// an earlier install: its TPROXY rules would send enrolled pods' v6 connections to `[::]`
/// listeners that zring no longer opens, cutting them instead of leaving them alone.
pub fn install(place: Place<'_>, capture: &Capture) -> Result<Capture, Error> {
    let v6_here = ipv6_available(place);
    let capture = capture.clone().with_ipv6(capture.ipv6 && v6_here);
    let mut text = script(&capture);
    if !capture.ipv6 && v6_here {
        text.insert_str(0, &drop_table_script(Family::V6));
    }
    place.nft(&["-f", "-"], Some(&text))?;
    for f in capture.families() {
        install_routing(place, f)?;
    }
    if !capture.ipv6 && v6_here {
        remove_routing(place, Family::V6)?;
    }
    Ok(capture)
}

/// The `nft -f` lines that delete `family`'s table, present or not.
fn drop_table_script(family: Family) -> String {
    let fam = family.nft();
    format!("add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n")
}

/// Removes every copy of `family`'s policy rule and empties its local route table. A table
/// that does not exist is already empty: `ip route flush` of it fails ("FIB table does not
/// exist"), so it is flushed only when listing it shows routes.
fn remove_routing(place: Place<'_>, family: Family) -> Result<(), Error> {
    let wanted = format!("fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}");
    let flag = family.ip_flag();
    while place.ip(&format!("{flag} rule show"))?.contains(&wanted) {
        place.ip(&format!("{flag} rule del {wanted}"))?;
    }
    let routes = place.ip(&format!("{flag} route show table {CAPTURE_TABLE}"));
    if routes.is_ok_and(|r| !r.trim().is_empty()) {
        place.ip(&format!("{flag} route flush table {CAPTURE_TABLE}"))?;
    }
    Ok(())
}

/// The policy-routing half of [`install`] for one family (also what `watch` restores when only
/// it is gone).
pub(crate) fn install_routing(place: Place<'_>, family: Family) -> Result<(), Error> {
    let [rule, route] = policy_routing_of(family);
    let wanted = format!("fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}");
    if !place
        .ip(&format!("{} rule show", family.ip_flag()))?
        .contains(&wanted)
    {
        place.ip(&rule)?;
    }
    place.ip(&route).map(drop)
}

/// Removes what [`install`] added at `place` (nothing missing is an error): the nft tables,
/// every copy of the policy rules, and the local route tables, of both families (IPv6 where the
/// kernel has it).
pub fn remove(place: Place<'_>) -> Result<(), Error> {
    let v6 = ipv6_available(place);
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| *f == Family::V4 || v6)
        .collect();
    let script: String = families.iter().map(|f| drop_table_script(*f)).collect();
    place.nft(&["-f", "-"], Some(&script))?;
    for f in families {
        remove_routing(place, f)?;
    }
    Ok(())
}

/// Packets and bytes one commented rule of `table ip zring` (or `ip6`) has matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    /// The rule's comment (`reply-to-zring`, `outbound`, …): its name in the module doc.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the counters of every rule of `table ip zring` in `node`.
pub fn counters(place: Place<'_>) -> Result<Vec<RuleCounter>, Error> {
    counters_of(place, Family::V4)
}

/// Reads the counters of every rule of `family`'s table in `node`.
pub fn counters_of(place: Place<'_>, family: Family) -> Result<Vec<RuleCounter>, Error> {
    let listing = place.nft(&["list", "table", family.nft(), TABLE], None)?;
    Ok(parse_counters(&listing))
}

/// Pulls `counter packets N bytes M … comment "X"` out of an `nft list table` listing.
fn parse_counters(listing: &str) -> Vec<RuleCounter> {
    listing
        .lines()
        .filter_map(|line| {
            let after = |key: &str| {
                let rest = &line[line.find(key)? + key.len()..];
                rest.split_whitespace().next()
            };
            let rule = after("comment ")?.trim_matches('"').to_owned();
            let packets = after("counter packets ")?.parse().ok()?;
            let bytes = after(" bytes ")?.parse().ok()?;
            Some(RuleCounter {
                rule,
                packets,
                bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
