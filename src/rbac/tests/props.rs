//! Property tests for `rbac`: `Cidr::contains` against a reference written with u128 shifts,
//! `authorize` against a naive evaluator on random policies, and "an enforced DENY that matches
//! always wins", whatever else applies.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

/// The reference for `Cidr::contains`: compare the top `prefix` bits with shifts on u128,
/// after reading an IPv4-mapped IPv6 address as IPv4.
fn reference_contains(v6: bool, net: u128, prefix: u8, ip: IpAddr) -> bool {
    let (ip_v6, bits) = match ip.to_canonical() {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    };
    if ip_v6 != v6 {
        return false;
    }
    if prefix == 0 {
        return true;
    }
    let width: u32 = if v6 { 128 } else { 32 };
    let shift = width - u32::from(prefix);
    (bits >> shift) == (net >> shift)
}

fn make_ip(v6: bool, bits: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(bits.into())
    } else {
        // Truncation intended: an IPv4 address is the low 32 bits.
        IpAddr::V4((bits as u32).into())
    }
}

/// A network and an address near it: the address shares a random number of leading bits with
/// the network, so both outcomes are common at every prefix length.
fn net_and_ip() -> impl Strategy<Value = (bool, u128, u8, IpAddr)> {
    (
        any::<bool>(),
        any::<u128>(),
        any::<u128>(),
        any::<u8>(),
        any::<u8>(),
        0u8..4,
    )
        .prop_map(|(v6, net, noise, prefix, shared, form)| {
            let width: u32 = if v6 { 128 } else { 32 };
            let net = if v6 { net } else { net & u128::from(u32::MAX) };
            let prefix = (u32::from(prefix) % (width + 1)) as u8;
            let shared = u32::from(shared) % (width + 1);
            // Keep the top `shared` bits of `net`, take the rest from `noise`.
            let keep = if shared == 0 {
                0
            } else {
                (u128::MAX << (128 - shared)) >> (128 - width)
            };
            let bits = (net & keep) | (noise & !keep & (u128::MAX >> (128 - width)));
            let ip = match (v6, form) {
                // The same IPv4 address as a mapped IPv6 one.
                (false, 0) => IpAddr::V6(Ipv4Addr::from(bits as u32).to_ipv6_mapped()),
                // The other family with the same low bits.
                (_, 1) => make_ip(!v6, bits),
                _ => make_ip(v6, bits),
            };
            (v6, net, prefix, ip)
        })
}

proptest! {
    #[test]
    fn cidr_contains_matches_reference((v6, net, prefix, ip) in net_and_ip()) {
        let cidr = Cidr::new(make_ip(v6, net), prefix).unwrap();
        let want = reference_contains(v6, net, prefix, ip);
        prop_assert_eq!(cidr.contains(ip), want, "{} contains {}", cidr, ip);
        // And through a policy: `sourceIps` and `notDestinationIps` use the same test.
        let c = Conn { id: None, src: ip, dst: SocketAddr::new(ip, 80) };
        let src = Match { source_ips: vec![cidr], ..m() };
        prop_assert_eq!(holds(&src, &c), want);
        let not_dst = Match { not_destination_ips: vec![cidr], ..m() };
        prop_assert_eq!(holds(&not_dst, &c), !want);
    }
}

// Random policies over a small vocabulary, so that matches are neither rare nor certain.

fn string_match() -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        Just(exact("a")),
        Just(exact("c")),
        Just(exact("")),
        Just(prefix("a")),
        Just(prefix("")),
        Just(suffix("b")),
        Just(PRESENCE),
        Just(exact("td/ns/a/sa/b")),
        Just(prefix("td/ns/a/")),
        Just(suffix("/sa/b.c")),
    ]
}

fn strings() -> impl Strategy<Value = Vec<StringMatch>> {
    prop::collection::vec(string_match(), 0..2)
}

fn accounts() -> impl Strategy<Value = Vec<ServiceAccountMatch>> {
    let one = prop_oneof![Just(sa("a", "b")), Just(sa("a", "b.c")), Just(sa("c", "b"))];
    prop::collection::vec(one, 0..2)
}

fn cidrs() -> impl Strategy<Value = Vec<Cidr>> {
    let one = prop_oneof![
        Just(cidr("10.0.0.0/8")),
        Just(cidr("10.0.0.1/32")),
        Just(cidr("0.0.0.0/0")),
        Just(cidr("fd00::/8")),
    ];
    prop::collection::vec(one, 0..2)
}

fn ports() -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(prop_oneof![Just(80u16), Just(8080)], 0..2)
}

/// Each field is empty two times in three, so groups stay satisfiable.
fn sparse<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = Vec<T>>,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![2 => Just(Vec::new()), 1 => s]
}

fn group() -> impl Strategy<Value = Match> {
    (
        (
            sparse(strings()),
            sparse(strings()),
            sparse(accounts()),
            sparse(accounts()),
        ),
        (
            sparse(strings()),
            sparse(strings()),
            sparse(cidrs()),
            sparse(cidrs()),
        ),
        (
            sparse(cidrs()),
            sparse(cidrs()),
            sparse(ports()),
            sparse(ports()),
        ),
    )
        .prop_map(
            |((ns, not_ns, sas, not_sas), (pr, not_pr, src, not_src), (dst, not_dst, p, not_p))| {
                Match {
                    namespaces: ns,
                    not_namespaces: not_ns,
                    service_accounts: sas,
                    not_service_accounts: not_sas,
                    principals: pr,
                    not_principals: not_pr,
                    source_ips: src,
                    not_source_ips: not_src,
                    destination_ips: dst,
                    not_destination_ips: not_dst,
                    destination_ports: p,
                    not_destination_ports: not_p,
                }
            },
        )
}

fn rules() -> impl Strategy<Value = Rules> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(group(), 0..3), 0..3),
        0..3,
    )
}

/// Where a random policy lives: `Global`, the destination's namespace, another namespace, a
/// selector policy the workload names, or one it does not.
#[derive(Debug, Clone, Copy)]
enum Place {
    Global,
    OwnNamespace,
    OtherNamespace,
    Named,
    Unnamed,
}

#[derive(Debug, Clone)]
struct RandomPolicy {
    place: Place,
    action: PolicyAction,
    dry_run: bool,
    rules: Rules,
}

fn random_policy() -> impl Strategy<Value = RandomPolicy> {
    let place = prop_oneof![
        Just(Place::Global),
        Just(Place::OwnNamespace),
        Just(Place::OtherNamespace),
        Just(Place::Named),
        Just(Place::Unnamed),
    ];
    let action = prop_oneof![Just(PolicyAction::Allow), Just(PolicyAction::Deny)];
    (place, action, prop::bool::weighted(0.2), rules()).prop_map(
        |(place, action, dry_run, rules)| RandomPolicy {
            place,
            action,
            dry_run,
            rules,
        },
    )
}

fn random_conn() -> impl Strategy<Value = Conn> {
    let id = prop_oneof![
        Just(None),
        Just(Some("spiffe://td/ns/a/sa/b")),
        Just(Some("spiffe://td/ns/a/sa/b.c")),
        Just(Some("spiffe://other/ns/c/sa/b")),
    ];
    let src = prop_oneof![Just("10.0.0.1"), Just("10.9.9.9"), Just("fd00::1")];
    let port = prop_oneof![Just(80u16), Just(8080)];
    (id, src, port).prop_map(|(id, src, port)| Conn {
        id: id.map(identity),
        src: ip(src),
        dst: SocketAddr::new(ip("10.0.0.2"), port),
    })
}

/// Builds the snapshot and the workload's references for a list of random policies; `ghost`
/// adds a reference to a policy that does not exist.
fn materialize(policies: &[RandomPolicy], ghost: bool) -> (Snapshot, Workload) {
    let mut refs = Vec::new();
    let mut built = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let name = format!("p{i}");
        let (ns, scope) = match p.place {
            Place::Global => ("istio-system", PolicyScope::Global),
            Place::OwnNamespace => (NS, PolicyScope::Namespace),
            Place::OtherNamespace => ("other", PolicyScope::Namespace),
            Place::Named | Place::Unnamed => (NS, PolicyScope::WorkloadSelector),
        };
        if matches!(p.place, Place::Named) {
            refs.push(format!("{ns}/{name}"));
        }
        let mut a = policy(ns, &name, scope, p.action, p.rules.clone());
        a.dry_run = p.dry_run;
        built.push(a);
    }
    if ghost {
        refs.push("ns/ghost".to_owned());
    }
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    (snapshot(built), workload(&refs))
}

/// A naive evaluator written from the module doc's rules, without short-circuits or passes:
/// every field, group, clause and rule is evaluated and collected.
fn reference_decision(snap: &Snapshot, w: &Workload, c: &Conn) -> (bool, Option<bool>) {
    fn string(m: &StringMatch, v: Option<&str>) -> bool {
        let Some(v) = v else { return false };
        match m {
            StringMatch::Exact(x) => v == &**x,
            StringMatch::Prefix(x) => v.starts_with(&**x),
            StringMatch::Suffix(x) => v.ends_with(&**x),
            StringMatch::Presence => !v.is_empty(),
        }
    }
    fn field<T>(pos: &[T], neg: &[T], f: impl Fn(&T) -> bool) -> bool {
        let p: Vec<bool> = pos.iter().map(&f).collect();
        let n: Vec<bool> = neg.iter().map(&f).collect();
        (p.is_empty() || p.contains(&true)) && !n.contains(&true)
    }
    let id = c.id.as_ref();
    let principal = id.map(|i| &i.as_str()["spiffe://".len()..]);
    let ns = id.map(Identity::namespace);
    let group = |g: &Match, degenerate: bool| -> bool {
        if g.is_empty() {
            return degenerate;
        }
        let results = [
            field(&g.namespaces, &g.not_namespaces, |s| string(s, ns)),
            field(&g.principals, &g.not_principals, |s| string(s, principal)),
            field(&g.service_accounts, &g.not_service_accounts, |a| {
                id.is_some_and(|i| {
                    i.namespace() == &*a.namespace && i.service_account() == &*a.service_account
                })
            }),
            field(&g.source_ips, &g.not_source_ips, |n| n.contains(c.src)),
            field(&g.destination_ips, &g.not_destination_ips, |n| {
                n.contains(c.dst.ip())
            }),
            field(&g.destination_ports, &g.not_destination_ports, |p| {
                *p == c.dst.port()
            }),
        ];
        !results.contains(&false)
    };
    let policy_matches = |p: &Authorization| -> bool {
        let degenerate = p.action == PolicyAction::Deny;
        let rule_results: Vec<bool> = p
            .rules
            .iter()
            .map(|rule| {
                let clauses: Vec<bool> = rule
                    .iter()
                    .map(|clause| {
                        if clause.is_empty() {
                            degenerate
                        } else {
                            let groups: Vec<bool> =
                                clause.iter().map(|g| group(g, degenerate)).collect();
                            groups.contains(&true)
                        }
                    })
                    .collect();
                !clauses.contains(&false)
            })
            .collect();
        rule_results.contains(&true)
    };
    let mut applicable: Vec<Arc<Authorization>> = Vec::new();
    applicable.extend(snap.global_policies().iter().cloned());
    applicable.extend(snap.namespace_policies(&w.namespace).iter().cloned());
    let mut missing = false;
    for key in &w.authorization_policies {
        match snap.policy(key) {
            Some(p) => applicable.push(p.clone()),
            None => missing = true,
        }
    }
    let verdict = |enforce_dry: bool| -> bool {
        let live: Vec<&Arc<Authorization>> = applicable
            .iter()
            .filter(|p| enforce_dry || !p.dry_run)
            .collect();
        if live
            .iter()
            .any(|p| p.action == PolicyAction::Deny && policy_matches(p))
        {
            return false;
        }
        if missing {
            return false;
        }
        let allows: Vec<_> = live
            .iter()
            .filter(|p| p.action == PolicyAction::Allow)
            .collect();
        allows.is_empty() || allows.iter().any(|p| policy_matches(p))
    };
    let any_dry = applicable.iter().any(|p| p.dry_run);
    (verdict(false), any_dry.then(|| verdict(true)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `authorize` agrees with the naive evaluator on allow/deny, for the enforced verdict
    /// and the dry-run one, and names a policy consistent with its verdict.
    #[test]
    fn agrees_with_reference(
        policies in prop::collection::vec(random_policy(), 0..6),
        ghost in prop::bool::weighted(0.1),
        conn in random_conn(),
    ) {
        let (snap, w) = materialize(&policies, ghost);
        let d = decide(&snap, &w, &conn);
        let (want, want_dry) = reference_decision(&snap, &w, &conn);
        prop_assert_eq!(d.is_allowed(), want, "{}", d);
        prop_assert_eq!(d.dry_run.as_ref().map(Verdict::is_allowed), want_dry, "{}", d);
        match &d.verdict {
            Verdict::AllowedBy(p) => prop_assert!(p.action == PolicyAction::Allow && !p.dry_run),
            Verdict::DeniedBy(p) => prop_assert!(p.action == PolicyAction::Deny && !p.dry_run),
            _ => {}
        }
        if let Some(Verdict::AllowedBy(p)) = &d.dry_run {
            prop_assert_eq!(p.action, PolicyAction::Allow);
        }
        if let Some(Verdict::DeniedBy(p)) = &d.dry_run {
            prop_assert_eq!(p.action, PolicyAction::Deny);
        }
    }

    /// Whatever ALLOW (and other) policies are present, an enforced DENY that matches denies,
    /// and the verdict names an enforced DENY policy.
    #[test]
    fn matching_deny_always_wins(
        mut policies in prop::collection::vec(random_policy(), 0..8),
        at in any::<prop::sample::Index>(),
        place in prop_oneof![Just(Place::Global), Just(Place::OwnNamespace), Just(Place::Named)],
        how in 0u8..5,
        conn in random_conn(),
    ) {
        // A rule built from the connection's own attributes, so it matches by construction
        // (or Istio's match-everything rule).
        let own = match how {
            0 => Some(Match { destination_ports: vec![conn.dst.port()], ..m() }),
            1 => Some(Match { source_ips: vec![Cidr::host(conn.src)], ..m() }),
            2 => Some(Match { destination_ips: vec![Cidr::host(conn.dst.ip())], ..m() }),
            3 => Some(match &conn.id {
                Some(id) => Match { principals: vec![exact(id.principal())], ..m() },
                None => Match { not_principals: vec![PRESENCE], ..m() },
            }),
            _ => None,
        };
        let rules = match own {
            Some(group) => one(group),
            None => vec![vec![]],
        };
        let winner = RandomPolicy { place, action: PolicyAction::Deny, dry_run: false, rules };
        let i = at.index(policies.len() + 1);
        policies.insert(i, winner);
        check_denied(&policies, &conn)?;
    }
}

fn check_denied(policies: &[RandomPolicy], conn: &Conn) -> Result<(), TestCaseError> {
    let (snap, w) = materialize(policies, false);
    let d = decide(&snap, &w, conn);
    prop_assert!(!d.is_allowed(), "{}", d);
    match &d.verdict {
        Verdict::DeniedBy(p) => prop_assert!(p.action == PolicyAction::Deny && !p.dry_run),
        v => prop_assert!(false, "expected a DENY policy to decide, got {}", v),
    }
    if let Some(dry) = &d.dry_run {
        prop_assert!(!dry.is_allowed(), "dry run: {}", dry);
    }
    Ok(())
}
