//! Unit tests of the capture ruleset text, its parameters, the counter listing parser and
//! command failures.

use super::*;

#[test]
fn failed_commands_show_their_input() {
    let err = Error::Command {
        command: "nft -f -".into(),
        status: "exit status: 1".into(),
        stderr: "Error: syntax error".into(),
        stdin: Some("table ip zring {".into()),
    };
    let text = err.to_string();
    assert!(text.contains("syntax error") && text.ends_with("input was:\ntable ip zring {"));
}

fn lab_capture() -> Capture {
    Capture::lab("10.244.2.0/24".parse().unwrap())
}

#[test]
fn ruleset_text_is_exact() {
    let want = r#"table ip zring {
	set ztunnel-pods-ips {
		type ipv4_addr
	}
	chain output {
		type route hook output priority mangle; policy accept;
		meta mark 0x539 ct mark set 0x539 counter comment "zring-conn"
	}
	chain host-output {
		type route hook output priority filter; policy accept;
		meta l4proto tcp meta mark != 0x539 ct direction original ip daddr @ztunnel-pods-ips meta mark set 0x111 counter comment "host-to-pod"
	}
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp ct mark 0x539 meta mark set 0x111 counter accept comment "reply-to-zring"
		meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set 0x111 counter accept comment "captured-flow"
		iifname "zp*" ip saddr @ztunnel-pods-ips meta l4proto tcp tproxy to :15001 meta mark set 0x111 counter accept comment "outbound"
		iifname "zp*" ip saddr @ztunnel-pods-ips meta l4proto tcp counter reject with tcp reset comment "outbound-closed"
		ip daddr @ztunnel-pods-ips meta l4proto tcp tcp dport 15008 tproxy to :15008 meta mark set 0x111 counter accept comment "inbound-hbone"
		ip daddr @ztunnel-pods-ips meta l4proto tcp tcp dport 15008 counter reject with tcp reset comment "inbound-hbone-closed"
		ip daddr @ztunnel-pods-ips meta l4proto tcp tproxy to :15006 meta mark set 0x111 counter accept comment "inbound-plaintext"
		ip daddr @ztunnel-pods-ips meta l4proto tcp counter reject with tcp reset comment "inbound-plaintext-closed"
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat - 10; policy accept;
		meta l4proto tcp meta mark 0x111 counter dnat ip to ip daddr comment "keep-destination"
	}
}
"#;
    assert_eq!(ruleset(&lab_capture()), want);
}

#[test]
fn every_pod_address_scope_keeps_the_cidr_rules() {
    let text = ruleset(&lab_capture().with_scope(Scope::EveryPodAddress));
    assert!(text.contains(
        r#"iifname "zp*" meta l4proto tcp tproxy to :15001 meta mark set 0x111 counter accept comment "outbound""#
    ));
    assert!(text.contains(
        r#"iifname != "lo" iifname != "zp*" ip daddr 10.244.2.0/24 meta l4proto tcp tproxy to :15006"#
    ));
    assert!(
        !text.contains("host-to-pod"),
        "no host capture without the set"
    );
    assert!(!text.contains("@ztunnel-pods-ips"));
    assert!(
        text.contains("set ztunnel-pods-ips {"),
        "declared, so the keeper finds it"
    );
    assert!(text.contains("keep-destination"));
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
    assert_eq!(text.matches("meta mark set 0x111").count(), 6);
}

#[test]
fn script_replaces_the_table_in_one_go() {
    let s = script(&lab_capture().with_ipv6(false));
    assert!(s.starts_with("add table ip zring\ndelete table ip zring\ntable ip zring {"));
    assert!(!s.contains("ip6"), "an IPv4-only node gets no IPv6 table");
    // Dual stack: both tables replaced in the same transaction, IPv4's first.
    let s = script(&lab_capture());
    assert!(s.starts_with(
        "add table ip zring\ndelete table ip zring\nadd table ip6 zring\n\
         delete table ip6 zring\ntable ip zring {"
    ));
    let v4 = s.find("table ip zring {").unwrap();
    let v6 = s.find("table ip6 zring {").expect("the IPv6 table");
    assert!(v4 < v6);
    assert!(s.ends_with(&ruleset6(&lab_capture())));
}

#[test]
fn the_ipv6_table_mirrors_the_ipv4_one() {
    let v4 = ruleset(&lab_capture().with_dns(true));
    let v6 = ruleset6(&lab_capture().with_dns(true));
    // Rule for rule: the same text once the family words are swapped.
    let swapped = v4
        .replace("dnat ip to ip daddr", "dnat ip6 to ip6 daddr")
        .replace("table ip zring", "table ip6 zring")
        .replace("ipv4_addr", "ipv6_addr")
        .replace(" ip saddr ", " ip6 saddr ")
        .replace(" ip daddr ", " ip6 daddr ")
        .replace("\tip daddr ", "\tip6 daddr ");
    assert_eq!(v6, swapped);
    assert!(v6.contains("type ipv6_addr"));
    assert!(v6.contains(
        r#"iifname "zp*" ip6 saddr @ztunnel-pods-ips meta l4proto tcp tproxy to :15001 meta mark set 0x111 counter accept comment "outbound""#
    ));
    assert!(v6.contains(r#"counter dnat ip6 to ip6 daddr comment "keep-destination""#));
    assert!(!v6.contains(" ip saddr ") && !v6.contains(" ip daddr "));
}

#[test]
fn ipv6_cidrs_parse_beside_ipv4_ones() {
    let c = Capture::parse("10.244.0.0/16, fd00:244::/48", "cali*").unwrap();
    assert_eq!(c.pod_cidrs, vec!["10.244.0.0/16".parse::<Cidr>().unwrap()]);
    assert_eq!(
        c.pod_cidrs6,
        vec!["fd00:244::/48".parse::<Cidr6>().unwrap()]
    );
    assert!(c.ipv6);
    let v6_only = Capture::parse("fd00:244::/48", "cali*").unwrap();
    assert!(v6_only.pod_cidrs.is_empty());
    assert!(
        Capture::parse("fd00:244::1/48", "cali*").is_err(),
        "host bits"
    );
    // The lab's scope matches the IPv6 CIDRs; without any, the IPv6 table uses the set.
    let every = c.with_scope(Scope::EveryPodAddress);
    assert!(ruleset6(&every).contains(
        r#"iifname != "lo" iifname != "cali*" ip6 daddr fd00:244::/48 meta l4proto tcp tproxy to :15006"#
    ));
    let no_cidr6 = lab_capture().with_scope(Scope::EveryPodAddress);
    assert!(ruleset6(&no_cidr6).contains("ip6 daddr @ztunnel-pods-ips"));
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
    let text = ruleset(&capture.clone().with_scope(Scope::EveryPodAddress));
    assert!(text.contains(r#"iifname "veth*" meta l4proto tcp tproxy to :15001"#));
    assert!(text.contains(
        r#"iifname != "lo" iifname != "veth*" ip daddr { 10.244.0.0/16, 10.96.0.0/12 } meta l4proto tcp tcp dport 15008"#
    ));
    let text = ruleset(&capture);
    assert!(text.contains(
        r#"iifname "veth*" ip saddr @ztunnel-pods-ips meta l4proto tcp tproxy to :15001"#
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
    let [rule, route] = policy_routing6();
    assert_eq!(rule, "-6 rule add fwmark 0x111 lookup 133");
    assert_eq!(route, "-6 route replace local ::/0 dev lo table 133");
    assert!(ruleset6(&lab_capture()).contains("meta mark set 0x111"));
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

#[test]
fn dns_rules_only_when_asked() {
    let without = ruleset(&lab_capture());
    assert!(!without.contains("dns-") && !without.contains(":15053"));
    let with = ruleset(&lab_capture().with_dns(true));
    let tcp = with.find(r#"comment "dns-tcp""#).expect("dns-tcp");
    let outbound = with.find(r#"comment "outbound""#).unwrap();
    assert!(
        tcp < outbound,
        "DNS over TCP is taken before outbound capture"
    );
    assert!(with.contains(
        r#"iifname "zp*" ip saddr @ztunnel-pods-ips tcp dport 53 tproxy to :15053 meta mark set 0x111 counter accept comment "dns-tcp""#
    ));
    let nat = with.find("chain nat-prerouting").unwrap();
    let udp = with.find(r#"comment "dns-udp""#).expect("dns-udp");
    assert!(udp > nat, "UDP is redirected in the nat hook");
    assert!(with.contains(
        r#"iifname "zp*" ip saddr @ztunnel-pods-ips udp dport 53 counter redirect to :15053 comment "dns-udp""#
    ));
}
