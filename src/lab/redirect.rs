//! Node-level traffic capture: the nftables ruleset and policy routing that send pod traffic to
//! zring's listeners the way Istio ambient's node-level (TPROXY) capture does, for a lab node
//! ([`Lab::redirect`](super::Lab::redirect)) and for a real one (`zring redirect`, which the
//! DaemonSet in `deploy/` runs). Both install the same text from [`ruleset`]; only the
//! [`Capture`] parameters differ (pod CIDRs, the pod-interface pattern), so the lab's proof of
//! every rule covers what a node gets.
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
//! Below, `zp*` is the lab's pod-interface pattern and "the pod CIDR" the node's; a real node
//! substitutes its CNI's pattern and its cluster's pod CIDRs.
//!
//! - `output`, `meta mark 0x539 → ct mark set 0x539` (rule `zring-conn`): remembers on the
//!   connection that zring opened it. The answers to a spoofed connection are addressed to a pod
//!   IP, which the node would otherwise *forward* to that pod, who never sent the SYN and resets
//!   it. The socket mark is on outgoing packets only; the conntrack mark is on both directions.
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
//!      socket opened without zring's mark. `socket wildcard 0` is essential: nft's `socket`
//!      lookup (unlike iptables' `-m socket`, which skips wildcard listeners unless given
//!      `--nowildcard`) also finds *listeners*, so without it a pod's SYN to a remote `:15008`
//!      matched zring's own `0.0.0.0:15008` listener on the pod's node and skipped outbound
//!      capture, and a SYN from outside to `pod:15001` landed on the outbound listener
//!      (`tests/lab.rs` checks the first).
//!   3. `outbound`: TCP in from a pod interface (`iifname "zp*"`) → TPROXY to :15001.
//!   4. `inbound-hbone`: TCP from elsewhere (not a pod interface, not `lo`) to the pod CIDR, port
//!      15008 → TPROXY to :15008.
//!   5. `inbound-plaintext`: other TCP from elsewhere to the pod CIDR → TPROXY to :15006.
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
//! compare or one socket lookup. Reverse-path filtering is off everywhere (see `ns`), although
//! the seed's symmetric paths also pass with strict `rp_filter=1`.
//!
//! Invariant: the ruleset lives in its own table (`table ip zring`) and is replaced atomically
//! (`nft -f` runs the delete and the new table as one transaction), so re-applying it never
//! leaves a half-installed capture.

use std::fmt::Write as _;

use super::{Cidr, LabError, Netns, cmd};

/// zring's outbound capture listener.
pub const OUTBOUND_PORT: u16 = 15001;
/// zring's inbound plaintext listener.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// zring's inbound HBONE listener.
pub const INBOUND_HBONE_PORT: u16 = 15008;
/// `SO_MARK` on zring's own upstream sockets (1337, ztunnel's `PACKET_MARK`).
pub const ZRING_MARK: u32 = 0x539;
/// Packet mark that policy routing delivers locally.
pub const CAPTURE_MARK: u32 = 0x111;
/// Routing table holding the `local 0.0.0.0/0 dev lo` route.
pub const CAPTURE_TABLE: u32 = 133;
/// Name of the nftables table (family `ip`).
pub const TABLE: &str = "zring";
/// The pod-interface pattern of lab nodes (`zp-<pod>`, `zp<hash>`).
pub const LAB_POD_INTERFACES: &str = "zp*";

/// What a node's capture is shaped by: where its pods' addresses are and which interfaces lead
/// to them. The lab passes its node's pod CIDR and `zp*`; a real node passes its cluster's pod
/// CIDRs and its CNI's interface prefix (`veth*`, `cali*`, `lxc*`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Destinations that count as pods for the inbound rules (at least one).
    pub pod_cidrs: Vec<Cidr>,
    /// An nft `iifname` pattern matching every pod interface on the node.
    pub pod_interfaces: String,
}

impl Capture {
    /// Capture for pods in `pod_cidrs` behind interfaces matching `pod_interfaces`; fails on an
    /// empty CIDR list or a pattern that is not a plain interface name with an optional
    /// trailing `*` (the pattern is spliced into nft's text, so nothing else may pass).
    pub fn new(pod_cidrs: Vec<Cidr>, pod_interfaces: &str) -> Result<Capture, LabError> {
        let name = pod_interfaces.strip_suffix('*').unwrap_or(pod_interfaces);
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if name.is_empty() || name.len() > 15 || !plain {
            return Err(LabError::Topology(format!(
                "pod interface pattern {pod_interfaces:?}: use an interface name or prefix \
                 (letters, digits, - _ .), optionally ending in *"
            )));
        }
        if pod_cidrs.is_empty() {
            return Err(LabError::Topology("no pod CIDR given".into()));
        }
        Ok(Capture {
            pod_cidrs,
            pod_interfaces: pod_interfaces.to_owned(),
        })
    }

    /// From text, as `zring redirect` takes it: comma-separated CIDRs and one pattern.
    pub fn parse(pod_cidrs: &str, pod_interfaces: &str) -> Result<Capture, LabError> {
        let cidrs = pod_cidrs
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()?;
        Capture::new(cidrs, pod_interfaces.trim())
    }

    /// A lab node's capture: its pod CIDR, behind `zp*` interfaces.
    pub fn lab(pod_cidr: Cidr) -> Capture {
        Capture {
            pod_cidrs: vec![pod_cidr],
            pod_interfaces: LAB_POD_INTERFACES.to_owned(),
        }
    }

    /// The pod CIDRs as nft writes a match on them: one network, or an anonymous set.
    fn pods(&self) -> String {
        match self.pod_cidrs.as_slice() {
            [one] => one.to_string(),
            many => {
                let list: Vec<String> = many.iter().map(Cidr::to_string).collect();
                format!("{{ {} }}", list.join(", "))
            }
        }
    }
}

/// The `table ip zring` definition for a node with `capture`'s pods and interfaces.
pub fn ruleset(capture: &Capture) -> String {
    let m = format!("{ZRING_MARK:#x}");
    let c = format!("{CAPTURE_MARK:#x}");
    let capture_set = format!("meta mark set {c} counter accept");
    let reset = "counter reject with tcp reset";
    let (pods, ifaces) = (capture.pods(), &capture.pod_interfaces);
    let outside =
        format!(r#"iifname != "lo" iifname != "{ifaces}" ip daddr {pods} meta l4proto tcp"#);
    let hbone = INBOUND_HBONE_PORT;
    let mut s = String::new();
    let mut line = |text: String| writeln!(s, "{text}").expect("writing to a String");
    line(format!("table ip {TABLE} {{"));
    line("\tchain output {".into());
    line("\t\ttype route hook output priority mangle; policy accept;".into());
    line(format!(
        r#"		meta mark {m} ct mark set {m} counter comment "zring-conn""#
    ));
    line("\t}".into());
    line("\tchain prerouting {".into());
    line("\t\ttype filter hook prerouting priority mangle; policy accept;".into());
    line(format!(
        r#"		meta l4proto tcp ct mark {m} {capture_set} comment "reply-to-zring""#
    ));
    line(format!(
        r#"		meta l4proto tcp socket transparent 1 socket wildcard 0 {capture_set} comment "captured-flow""#
    ));
    line(format!(
        r#"		iifname "{ifaces}" meta l4proto tcp tproxy to :{OUTBOUND_PORT} {capture_set} comment "outbound""#
    ));
    line(format!(
        r#"		iifname "{ifaces}" meta l4proto tcp {reset} comment "outbound-closed""#
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
    line("}".into());
    s
}

/// The whole `nft -f` script: drop any previous `table ip zring`, then define it anew, in one
/// transaction (`add` first so the `delete` cannot fail on a node without the table).
pub fn script(capture: &Capture) -> String {
    format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\n{}",
        ruleset(capture)
    )
}

/// The policy routing capture needs, as `ip` arguments: marked packets are delivered locally.
pub fn policy_routing() -> [String; 2] {
    [
        format!("rule add fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}"),
        format!("route replace local 0.0.0.0/0 dev lo table {CAPTURE_TABLE}"),
    ]
}

/// Where capture is installed: a lab namespace, or the namespace this process runs in (a real
/// node's, for `zring redirect`).
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    Lab(&'a Netns),
    Here,
}

impl Place<'_> {
    fn nft(self, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
        match self {
            Place::Lab(ns) => cmd::nft_in(ns.name(), args, stdin),
            Place::Here => cmd::run(cmd::program(cmd::NFT), args, stdin),
        }
    }

    fn ip(self, line: &str) -> Result<String, LabError> {
        let args: Vec<&str> = line.split_whitespace().collect();
        match self {
            Place::Lab(ns) => ns.ip(&args),
            Place::Here => cmd::run(cmd::program(cmd::IP), &args, None),
        }
    }
}

/// Installs capture at `place`: the nft table (replacing an older one atomically) and the
/// policy route. Idempotent: the `ip rule` is added only if it is not there yet.
pub fn install(place: Place<'_>, capture: &Capture) -> Result<(), LabError> {
    place.nft(&["-f", "-"], Some(&script(capture)))?;
    let [rule, route] = policy_routing();
    let wanted = format!("fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}");
    if !place.ip("rule show")?.contains(&wanted) {
        place.ip(&rule)?;
    }
    place.ip(&route).map(drop)
}

/// Removes what [`install`] added at `place` (nothing missing is an error): the nft table, every
/// copy of the policy rule, and the local route table.
pub fn remove(place: Place<'_>) -> Result<(), LabError> {
    place.nft(
        &["-f", "-"],
        Some(&format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")),
    )?;
    let wanted = format!("fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}");
    while place.ip("rule show")?.contains(&wanted) {
        place.ip(&format!("rule del {wanted}"))?;
    }
    place
        .ip(&format!("route flush table {CAPTURE_TABLE}"))
        .map(drop)
}

/// Packets and bytes one commented rule of `table ip zring` has matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    /// The rule's comment (`reply-to-zring`, `outbound`, …): its name in the module doc.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the counters of every rule of `table ip zring` in `node`.
pub fn counters(place: Place<'_>) -> Result<Vec<RuleCounter>, LabError> {
    let listing = place.nft(&["list", "table", "ip", TABLE], None)?;
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
mod tests {
    use super::*;

    fn lab_capture() -> Capture {
        Capture::lab("10.244.2.0/24".parse().unwrap())
    }

    #[test]
    fn ruleset_text_is_exact() {
        let want = r#"table ip zring {
	chain output {
		type route hook output priority mangle; policy accept;
		meta mark 0x539 ct mark set 0x539 counter comment "zring-conn"
	}
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp ct mark 0x539 meta mark set 0x111 counter accept comment "reply-to-zring"
		meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set 0x111 counter accept comment "captured-flow"
		iifname "zp*" meta l4proto tcp tproxy to :15001 meta mark set 0x111 counter accept comment "outbound"
		iifname "zp*" meta l4proto tcp counter reject with tcp reset comment "outbound-closed"
		iifname != "lo" iifname != "zp*" ip daddr 10.244.2.0/24 meta l4proto tcp tcp dport 15008 tproxy to :15008 meta mark set 0x111 counter accept comment "inbound-hbone"
		iifname != "lo" iifname != "zp*" ip daddr 10.244.2.0/24 meta l4proto tcp tcp dport 15008 counter reject with tcp reset comment "inbound-hbone-closed"
		iifname != "lo" iifname != "zp*" ip daddr 10.244.2.0/24 meta l4proto tcp tproxy to :15006 meta mark set 0x111 counter accept comment "inbound-plaintext"
		iifname != "lo" iifname != "zp*" ip daddr 10.244.2.0/24 meta l4proto tcp counter reject with tcp reset comment "inbound-plaintext-closed"
	}
}
"#;
        assert_eq!(ruleset(&lab_capture()), want);
    }

    #[test]
    fn rules_keep_their_order() {
        let text = ruleset(&lab_capture());
        let order = [
            "reply-to-zring",
            "captured-flow",
            "\"outbound\"",
            "outbound-closed",
            "\"inbound-hbone\"",
            "inbound-hbone-closed",
            "\"inbound-plaintext\"",
            "inbound-plaintext-closed",
        ];
        let positions: Vec<usize> = order.iter().map(|r| text.find(r).expect(r)).collect();
        assert!(positions.is_sorted(), "{positions:?}");
    }

    #[test]
    fn own_mark_never_routes_locally() {
        // Only the capture mark may reach the local-delivery table; zring's own mark is saved to
        // conntrack, never set on a packet in prerouting.
        let text = ruleset(&lab_capture());
        assert!(!text.contains("meta mark set 0x539"));
        assert_eq!(text.matches("meta mark set 0x111").count(), 5);
    }

    #[test]
    fn script_replaces_the_table_in_one_go() {
        let s = script(&lab_capture());
        assert!(s.starts_with("add table ip zring\ndelete table ip zring\ntable ip zring {"));
    }

    #[test]
    fn a_real_node_gets_its_cni_interfaces_and_every_pod_cidr() {
        let capture = Capture::new(
            vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.96.0.0/12".parse().unwrap(),
            ],
            "veth*",
        )
        .unwrap();
        let text = ruleset(&capture);
        assert!(text.contains(r#"iifname "veth*" meta l4proto tcp tproxy to :15001"#));
        assert!(text.contains(
            r#"iifname != "lo" iifname != "veth*" ip daddr { 10.244.0.0/16, 10.96.0.0/12 } meta l4proto tcp tcp dport 15008"#
        ));
        assert!(!text.contains("zp*"));
        // Same rules, same order, whatever the parameters.
        let lab = ruleset(&lab_capture());
        assert_eq!(text.lines().count(), lab.lines().count());
    }

    #[test]
    fn capture_parameters_cannot_inject_nft_text() {
        let cidrs = || vec!["10.244.0.0/16".parse().unwrap()];
        for ok in ["veth*", "cali*", "lxc*", "eth0", "azv*", "vxlan.calico"] {
            assert!(Capture::new(cidrs(), ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "veth\"*",
            "a b*",
            "veth*\" accept",
            "x*y",
            "abcdefghijklmnop*",
        ] {
            assert!(Capture::new(cidrs(), bad).is_err(), "{bad}");
        }
        assert!(Capture::new(Vec::new(), "veth*").is_err());
        assert_eq!(
            Capture::parse(" 10.244.0.0/16, 10.245.0.0/16 ,", "cali*").unwrap(),
            Capture::new(
                vec![
                    "10.244.0.0/16".parse().unwrap(),
                    "10.245.0.0/16".parse().unwrap()
                ],
                "cali*"
            )
            .unwrap()
        );
        assert!(
            Capture::parse("10.244.0.1/16", "veth*").is_err(),
            "host bits"
        );
        assert!(Capture::parse("", "veth*").is_err());
    }

    #[test]
    fn policy_routing_matches_the_marks_in_the_ruleset() {
        let [rule, route] = policy_routing();
        assert_eq!(rule, "rule add fwmark 0x111 lookup 133");
        assert_eq!(route, "route replace local 0.0.0.0/0 dev lo table 133");
        assert!(ruleset(&lab_capture()).contains("meta mark set 0x111"));
    }

    #[test]
    fn counters_parse_from_an_nft_listing() {
        // As `nft list table ip zring` prints it (marks widened, sets resolved).
        let listing = r#"table ip zring {
	chain output {
		type route hook output priority mangle; policy accept;
		meta mark 0x00000539 ct mark set 0x00000539 counter packets 4 bytes 240 comment "zring-conn"
	}
	chain prerouting {
		meta l4proto tcp ct mark 0x00000539 meta mark set 0x00000111 counter packets 3 bytes 180 accept comment "reply-to-zring"
		iifname "zp*" meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset comment "outbound-closed"
	}
}"#;
        let got = parse_counters(listing);
        assert_eq!(
            got,
            vec![
                RuleCounter {
                    rule: "zring-conn".into(),
                    packets: 4,
                    bytes: 240
                },
                RuleCounter {
                    rule: "reply-to-zring".into(),
                    packets: 3,
                    bytes: 180
                },
                RuleCounter {
                    rule: "outbound-closed".into(),
                    packets: 0,
                    bytes: 0
                },
            ]
        );
    }
}
