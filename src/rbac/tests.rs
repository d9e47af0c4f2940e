//! Tests for `rbac`, as tables: every match field and its negation, rule structure, scopes, the
//! verdict order, dry run, both fail-closed cases, hostile identities, plaintext sources. The
//! property tests are in `tests/props.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::state::{Cidr, PolicyScope, SnapshotBuilder};

mod props;

/// The destination workload's namespace.
const NS: &str = "ns";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn identity(s: &str) -> Identity {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The destination workload: `w` in `NS`, naming `refs` as its workload-selector policies.
fn workload(refs: &[&str]) -> Workload {
    Workload {
        uid: "w".into(),
        name: "w".into(),
        namespace: NS.into(),
        workload_ips: vec![ip("10.0.0.2")],
        authorization_policies: refs.iter().map(|r| Arc::from(*r)).collect(),
        ..Workload::default()
    }
}

fn snapshot(policies: impl IntoIterator<Item = Authorization>) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for p in policies {
        b.add_policy(p);
    }
    b.build().unwrap_or_else(|e| panic!("test snapshot: {e}"))
}

type Rules = Vec<Vec<Vec<Match>>>;

fn policy(
    namespace: &str,
    name: &str,
    scope: PolicyScope,
    action: PolicyAction,
    rules: Rules,
) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action,
        dry_run: false,
        rules,
    }
}

/// A `Namespace` policy in the destination's namespace.
fn allow(name: &str, rules: Rules) -> Authorization {
    policy(NS, name, PolicyScope::Namespace, PolicyAction::Allow, rules)
}

fn deny(name: &str, rules: Rules) -> Authorization {
    policy(NS, name, PolicyScope::Namespace, PolicyAction::Deny, rules)
}

fn dry(mut p: Authorization) -> Authorization {
    p.dry_run = true;
    p
}

/// One rule, one clause, one group.
fn one(m: Match) -> Rules {
    vec![vec![vec![m]]]
}

fn m() -> Match {
    Match::default()
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

fn prefix(s: &str) -> StringMatch {
    StringMatch::Prefix(s.into())
}

fn suffix(s: &str) -> StringMatch {
    StringMatch::Suffix(s.into())
}

const PRESENCE: StringMatch = StringMatch::Presence;

fn sa(namespace: &str, name: &str) -> ServiceAccountMatch {
    ServiceAccountMatch {
        namespace: namespace.into(),
        service_account: name.into(),
    }
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

/// A connection's own attributes; the destination workload and snapshot come per test.
#[derive(Debug, Clone)]
struct Conn {
    id: Option<Identity>,
    src: IpAddr,
    dst: SocketAddr,
}

impl Conn {
    /// mTLS from `id`, 10.0.0.1 → 10.0.0.2:8080.
    fn mtls(id: &str) -> Conn {
        Conn {
            id: Some(identity(id)),
            ..Conn::plain()
        }
    }

    /// Plaintext, 10.0.0.1 → 10.0.0.2:8080.
    fn plain() -> Conn {
        Conn {
            id: None,
            src: ip("10.0.0.1"),
            dst: "10.0.0.2:8080".parse().unwrap(),
        }
    }

    fn src(mut self, s: &str) -> Conn {
        self.src = ip(s);
        self
    }

    fn dst(mut self, s: &str) -> Conn {
        self.dst = s.parse().unwrap();
        self
    }
}

/// The usual client: `spiffe://cluster.local/ns/a/sa/b`.
fn ab() -> Conn {
    Conn::mtls("spiffe://cluster.local/ns/a/sa/b")
}

fn decide(snap: &Snapshot, w: &Workload, c: &Conn) -> Decision {
    authorize(&Connection {
        src_identity: c.id.as_ref(),
        src_ip: c.src,
        dst: c.dst,
        dst_workload: w,
        snapshot: snap,
    })
}

/// Whether a policy shaped `rules` matches `c`, asked through `authorize` with the policy as
/// the destination's only policy.
fn matches(action: PolicyAction, rules: Rules, c: &Conn) -> bool {
    let p = policy(NS, "p", PolicyScope::Namespace, action, rules);
    let d = decide(&snapshot([p]), &workload(&[]), c);
    assert_eq!(d.dry_run, None);
    match (action, &d.verdict) {
        (PolicyAction::Allow, Verdict::AllowedBy(p))
        | (PolicyAction::Deny, Verdict::DeniedBy(p)) => {
            assert_eq!(&*p.name, "p");
            true
        }
        (PolicyAction::Allow, Verdict::NoAllowMatched)
        | (PolicyAction::Deny, Verdict::NoAllowPolicy) => false,
        (_, v) => panic!("unexpected verdict {v}"),
    }
}

/// Whether one non-empty group holds for `c`. Asked as an ALLOW and as a DENY policy, which must
/// agree: the action only matters for degenerate shapes.
fn holds(group: &Match, c: &Conn) -> bool {
    let as_allow = matches(PolicyAction::Allow, one(group.clone()), c);
    let as_deny = matches(PolicyAction::Deny, one(group.clone()), c);
    assert_eq!(as_allow, as_deny, "ALLOW and DENY disagree on {group:?}");
    as_allow
}

/// A connection from `id` (a principal, `td/ns/NS/sa/SA`; `None` is plaintext), from 10.0.0.1 to
/// 10.0.0.2:8080.
fn from(id: Option<&str>) -> Conn {
    match id {
        Some(p) => Conn::mtls(&format!("spiffe://{p}")),
        None => Conn::plain(),
    }
}

const AB: Option<&str> = Some("cluster.local/ns/a/sa/b");
const PLAIN: Option<&str> = None;

/// Rows of (label, entries, source identity, whether the group holds), for one list field.
fn check_field<T: Clone>(
    field: impl Fn(Vec<T>) -> Match,
    rows: &[(&str, Vec<T>, Option<&str>, bool)],
) {
    for (label, entries, id, want) in rows {
        assert_eq!(holds(&field(entries.clone()), &from(*id)), *want, "{label}");
    }
}

fn check_groups(rows: &[(&str, Match, Conn, bool)]) {
    for (label, group, conn, want) in rows {
        assert_eq!(holds(group, conn), *want, "{label}");
    }
}

#[test]
fn principals() {
    let td_ab = "cluster.local/ns/a/sa/b";
    #[rustfmt::skip]
    let rows = [
        ("exact", vec![exact(td_ab)], AB, true),
        ("exact, other account", vec![exact("cluster.local/ns/a/sa/c")], AB, false),
        ("exact is not a prefix", vec![exact(td_ab)], Some("cluster.local/ns/a/sa/bb"), false),
        ("exact, other trust domain", vec![exact(td_ab)], Some("evil.example/ns/a/sa/b"), false),
        ("a pattern with the scheme never matches", vec![exact("spiffe://cluster.local/ns/a/sa/b")], AB, false),
        ("any entry", vec![exact("x/ns/y/sa/z"), exact(td_ab)], AB, true),
        ("prefix", vec![prefix("cluster.local/ns/a/")], AB, true),
        ("prefix ending in / is not a longer namespace", vec![prefix("cluster.local/ns/a/")], Some("cluster.local/ns/ab/sa/b"), false),
        ("prefix is literal text", vec![prefix("cluster.local/ns/a")], Some("cluster.local/ns/ab/sa/b"), true),
        ("prefix of a look-alike trust domain", vec![prefix("cluster.local/")], Some("cluster.local.evil.example/ns/a/sa/b"), false),
        ("suffix", vec![suffix("/sa/b")], AB, true),
        ("suffix, longer account", vec![suffix("/sa/b")], Some("cluster.local/ns/a/sa/xb"), false),
        ("suffix is literal text", vec![suffix(td_ab)], Some("xcluster.local/ns/a/sa/b"), true),
        ("presence", vec![PRESENCE], AB, true),
        ("empty prefix covers any identity", vec![prefix("")], AB, true),
        ("empty exact matches no identity", vec![exact("")], AB, false),
        ("a dotted account is not its first label", vec![exact(td_ab)], Some("cluster.local/ns/a/sa/b.c"), false),
        ("a dotted account, exact", vec![exact("cluster.local/ns/a/sa/b.c")], Some("cluster.local/ns/a/sa/b.c"), true),
        // Plaintext never satisfies a positive entry, whatever its kind.
        ("plaintext, empty exact", vec![exact("")], PLAIN, false),
        ("plaintext, empty prefix", vec![prefix("")], PLAIN, false),
        ("plaintext, empty suffix", vec![suffix("")], PLAIN, false),
        ("plaintext, presence", vec![PRESENCE], PLAIN, false),
    ];
    check_field(
        |l| Match {
            principals: l,
            ..m()
        },
        &rows,
    );
}

#[test]
fn not_principals() {
    #[rustfmt::skip]
    let rows = [
        ("excluded", vec![exact("cluster.local/ns/a/sa/b")], AB, false),
        ("not excluded", vec![exact("cluster.local/ns/a/sa/c")], AB, true),
        ("any entry excludes", vec![exact("x/ns/y/sa/z"), prefix("cluster.local/ns/a/")], AB, false),
        ("presence excludes every identity", vec![PRESENCE], AB, false),
        // No identity: nothing can be excluded, so the negative list holds. This is what makes
        // istiod's STRICT policy (DENY notPrincipals: [Presence]) deny plaintext.
        ("plaintext, presence", vec![PRESENCE], PLAIN, true),
        ("plaintext, exact", vec![exact("cluster.local/ns/a/sa/b")], PLAIN, true),
        ("plaintext, empty exact", vec![exact("")], PLAIN, true),
    ];
    check_field(
        |l| Match {
            not_principals: l,
            ..m()
        },
        &rows,
    );

    let both = Match {
        principals: vec![prefix("cluster.local/ns/a/")],
        not_principals: vec![exact("cluster.local/ns/a/sa/bad")],
        ..m()
    };
    #[rustfmt::skip]
    let rows = [
        ("positive and not negative", both.clone(), ab(), true),
        ("negative beats positive", both.clone(), from(Some("cluster.local/ns/a/sa/bad")), false),
        ("no positive", both.clone(), from(Some("cluster.local/ns/c/sa/b")), false),
        ("plaintext", both, Conn::plain(), false),
    ];
    check_groups(&rows);
}

#[test]
fn namespaces() {
    #[rustfmt::skip]
    let rows = [
        ("exact", vec![exact("a")], AB, true),
        ("exact, other", vec![exact("c")], AB, false),
        ("exact is whole", vec![exact("a")], Some("cluster.local/ns/ab/sa/b"), false),
        ("trust domain is ignored", vec![exact("a")], Some("other.example/ns/a/sa/b"), true),
        ("the account is not the namespace", vec![exact("b")], AB, false),
        ("prefix", vec![prefix("kube-")], Some("td/ns/kube-system/sa/x"), true),
        ("suffix", vec![suffix("-prod")], Some("td/ns/shop-prod/sa/x"), true),
        ("suffix, other", vec![suffix("-prod")], AB, false),
        ("presence", vec![PRESENCE], AB, true),
        // ztunnel compares plaintext as namespace "": these would admit it there.
        ("plaintext, empty exact", vec![exact("")], PLAIN, false),
        ("plaintext, empty prefix", vec![prefix("")], PLAIN, false),
        ("plaintext, empty suffix", vec![suffix("")], PLAIN, false),
        ("plaintext, presence", vec![PRESENCE], PLAIN, false),
    ];
    check_field(
        |l| Match {
            namespaces: l,
            ..m()
        },
        &rows,
    );

    #[rustfmt::skip]
    let rows = [
        ("excluded", vec![exact("a")], AB, false),
        ("other", vec![exact("c")], AB, true),
        ("empty prefix excludes every identity", vec![prefix("")], AB, false),
        ("plaintext", vec![exact("a")], PLAIN, true),
        ("plaintext, presence", vec![PRESENCE], PLAIN, true),
    ];
    check_field(
        |l| Match {
            not_namespaces: l,
            ..m()
        },
        &rows,
    );
}

#[test]
fn service_accounts() {
    let dotted = Some("cluster.local/ns/a/sa/b.c");
    #[rustfmt::skip]
    let rows = [
        ("exact", vec![sa("a", "b")], AB, true),
        ("other account", vec![sa("a", "c")], AB, false),
        ("other namespace", vec![sa("c", "b")], AB, false),
        ("swapped", vec![sa("b", "a")], AB, false),
        ("trust domain is ignored", vec![sa("a", "b")], Some("other.example/ns/a/sa/b"), true),
        ("any entry", vec![sa("x", "y"), sa("a", "b")], AB, true),
        ("dotted name, literal", vec![sa("a", "b.c")], dotted, true),
        ("a dotted account is not its first label", vec![sa("a", "b")], dotted, false),
        ("never split into name.namespace", vec![sa("a", "b.c")], Some("cluster.local/ns/c/sa/b"), false),
        ("never split into namespace.name", vec![sa("b", "c")], dotted, false),
        ("no prefix matching", vec![sa("a", "b")], Some("td/ns/a/sa/bb"), false),
        ("empty name", vec![sa("a", "")], AB, false),
        ("plaintext", vec![sa("a", "b")], PLAIN, false),
    ];
    check_field(
        |l| Match {
            service_accounts: l,
            ..m()
        },
        &rows,
    );

    #[rustfmt::skip]
    let rows = [
        ("excluded", vec![sa("a", "b")], AB, false),
        ("other", vec![sa("a", "c")], AB, true),
        ("dotted is another account", vec![sa("a", "b")], dotted, true),
        ("plaintext", vec![sa("a", "b")], PLAIN, true),
    ];
    check_field(
        |l| Match {
            not_service_accounts: l,
            ..m()
        },
        &rows,
    );
}

#[test]
fn addresses_and_ports() {
    let nets = |list: &[&str]| -> Vec<Cidr> { list.iter().map(|c| cidr(c)).collect() };
    let src = |l: &[&str]| Match {
        source_ips: nets(l),
        ..m()
    };
    let not_src = |l: &[&str]| Match {
        not_source_ips: nets(l),
        ..m()
    };
    let dst = |l: &[&str]| Match {
        destination_ips: nets(l),
        ..m()
    };
    let not_dst = |l: &[&str]| Match {
        not_destination_ips: nets(l),
        ..m()
    };
    let ports = |l: &[u16]| Match {
        destination_ports: l.to_vec(),
        ..m()
    };
    let not_ports = |l: &[u16]| Match {
        not_destination_ports: l.to_vec(),
        ..m()
    };
    #[rustfmt::skip]
    let rows = [
        ("source in", src(&["10.0.0.0/24"]), ab(), true),
        ("source host", src(&["10.0.0.1"]), ab(), true),
        ("source out", src(&["10.0.1.0/24"]), ab(), false),
        ("source, any entry", src(&["fd00::/8", "10.0.0.0/8"]), ab(), true),
        ("source, v6 network, v4 peer", src(&["::/0"]), ab(), false),
        ("source, mapped v4 peer", src(&["10.0.0.0/24"]), ab().src("::ffff:10.0.0.1"), true),
        ("source, v6 peer", src(&["fd00::/8"]), ab().src("fd00::1"), true),
        ("source, plaintext", src(&["10.0.0.0/24"]), Conn::plain(), true),
        ("not source, in", not_src(&["10.0.0.1"]), ab(), false),
        ("not source, out", not_src(&["10.0.0.9"]), ab(), true),
        ("not source, mapped", not_src(&["10.0.0.1"]), ab().src("::ffff:10.0.0.1"), false),
        ("destination in", dst(&["10.0.0.2/32"]), ab(), true),
        ("destination out", dst(&["10.0.0.3/32"]), ab(), false),
        ("destination is not the source", dst(&["10.0.0.1/32"]), ab(), false),
        ("destination, mapped", dst(&["10.0.0.0/8"]), ab().dst("[::ffff:10.0.0.2]:8080"), true),
        ("not destination, in", not_dst(&["0.0.0.0/0"]), ab(), false),
        ("not destination, out", not_dst(&["fd00::/8"]), ab(), true),
        ("port", ports(&[8080]), ab(), true),
        ("port, other", ports(&[80]), ab(), false),
        ("port, any entry", ports(&[80, 8080]), ab(), true),
        ("port is the destination's", ports(&[8080]), ab().dst("10.0.0.2:80"), false),
        ("port, plaintext", ports(&[8080]), Conn::plain(), true),
        ("not port, excluded", not_ports(&[8080]), ab(), false),
        ("not port, other", not_ports(&[9999]), ab(), true),
    ];
    check_groups(&rows);
}

#[test]
fn fields_are_anded_and_each_is_any_positive_no_negative() {
    let group = Match {
        namespaces: vec![exact("a")],
        source_ips: vec![cidr("10.0.0.0/24")],
        destination_ports: vec![8080, 8443],
        not_destination_ports: vec![8443],
        ..m()
    };
    #[rustfmt::skip]
    let rows = [
        ("all hold", group.clone(), ab(), true),
        ("namespace fails", group.clone(), from(Some("td/ns/c/sa/b")), false),
        ("source fails", group.clone(), ab().src("10.9.0.1"), false),
        ("port fails", group.clone(), ab().dst("10.0.0.2:80"), false),
        ("negative beats positive", group.clone(), ab().dst("10.0.0.2:8443"), false),
        ("plaintext fails the namespace", group, Conn::plain(), false),
    ];
    check_groups(&rows);
}

#[test]
fn rules_clauses_and_groups() {
    let ns = |n: &str| Match {
        namespaces: vec![exact(n)],
        ..m()
    };
    let port = |p: u16| Match {
        destination_ports: vec![p],
        ..m()
    };
    let from_c = from(Some("td/ns/c/sa/b"));
    #[rustfmt::skip]
    let rows: Vec<(&str, Rules, Conn, bool)> = vec![
        ("rules are ORed: first", vec![vec![vec![ns("a")]], vec![vec![ns("c")]]], ab(), true),
        ("rules are ORed: second", vec![vec![vec![ns("c")]], vec![vec![ns("a")]]], ab(), true),
        ("rules are ORed: neither", vec![vec![vec![ns("x")]], vec![vec![ns("y")]]], ab(), false),
        ("clauses are ANDed: both", vec![vec![vec![ns("a")], vec![port(8080)]]], ab(), true),
        ("clauses are ANDed: one fails", vec![vec![vec![ns("a")], vec![port(80)]]], ab(), false),
        ("clauses are ANDed: other fails", vec![vec![vec![ns("a")], vec![port(8080)]]], from_c.clone(), false),
        ("groups are ORed", vec![vec![vec![ns("c"), ns("a")]]], ab(), true),
        ("groups are ORed: none", vec![vec![vec![ns("c"), ns("x")]]], ab(), false),
        ("a rule holds only as a whole",
            vec![vec![vec![ns("c")], vec![port(80)]], vec![vec![ns("x")], vec![port(8080)]]], ab(), false),
        ("nesting", vec![vec![vec![ns("c"), ns("a")], vec![port(80), port(8080)]]], from_c, true),
    ];
    for (label, rules, conn, want) in rows {
        for action in [PolicyAction::Allow, PolicyAction::Deny] {
            let got = matches(action, rules.clone(), &conn);
            assert_eq!(got, want, "{label} ({action:?})");
        }
    }
}

/// Degenerate shapes resolve toward deny; the empty rule is Istio's `{}`; no rules is nothing.
#[test]
fn empty_shapes() {
    let ns_c = Match {
        namespaces: vec![exact("c")],
        ..m()
    };
    // (label, rules, matches as ALLOW, matches as DENY)
    #[rustfmt::skip]
    let rows: Vec<(&str, Rules, bool, bool)> = vec![
        ("no rules: matches nothing", vec![], false, false),
        ("empty rule is `rules: [{}]`: everything", vec![vec![]], true, true),
        ("an empty rule beside a failing one", vec![vec![vec![ns_c.clone()]], vec![]], true, true),
        ("empty clause: degenerate", vec![vec![vec![]]], false, true),
        ("empty group: degenerate", one(m()), false, true),
        ("empty group beside a failing one", vec![vec![vec![ns_c.clone(), m()]]], false, true),
        ("empty group ANDed with a failing clause", vec![vec![vec![m()], vec![ns_c.clone()]]], false, false),
        ("empty clause ANDed with a failing clause", vec![vec![vec![], vec![ns_c]]], false, false),
    ];
    for conn in [ab(), Conn::plain()] {
        for (label, rules, want_allow, want_deny) in &rows {
            let allowed = matches(PolicyAction::Allow, rules.clone(), &conn);
            assert_eq!(allowed, *want_allow, "{label} (ALLOW)");
            let denied = matches(PolicyAction::Deny, rules.clone(), &conn);
            assert_eq!(denied, *want_deny, "{label} (DENY)");
        }
    }
    // An empty group does not hide a real one beside it in an ALLOW policy.
    let ns_a = Match {
        namespaces: vec![exact("a")],
        ..m()
    };
    assert!(matches(
        PolicyAction::Allow,
        vec![vec![vec![m(), ns_a]]],
        &ab()
    ));
}

/// One row of a decision table: policies in the snapshot, the workload's named policies, the
/// connection, the verdict and dry-run verdict as the access log renders them.
struct Case {
    label: &'static str,
    policies: Vec<Authorization>,
    refs: &'static [&'static str],
    conn: Conn,
    verdict: &'static str,
    dry_run: Option<&'static str>,
}

fn check_cases(cases: Vec<Case>) {
    for c in cases {
        let snap = snapshot(c.policies);
        let d = decide(&snap, &workload(c.refs), &c.conn);
        assert_eq!(d.verdict.to_string(), c.verdict, "{}", c.label);
        assert_eq!(
            d.dry_run.as_ref().map(|v| v.to_string()).as_deref(),
            c.dry_run,
            "{} (dry run)",
            c.label
        );
        // The deciding policy is the snapshot's own, not a copy.
        if let Some(p) = d.verdict.policy() {
            assert!(
                Arc::ptr_eq(p, snap.policy(&p.key()).unwrap()),
                "{}",
                c.label
            );
        }
    }
}

fn from_ns(n: &str) -> Match {
    Match {
        namespaces: vec![exact(n)],
        ..m()
    }
}

#[test]
fn scopes() {
    let global = |name: &str, action, rules| {
        policy("istio-system", name, PolicyScope::Global, action, rules)
    };
    let selector = |ns: &str, name: &str, action, rules| {
        policy(ns, name, PolicyScope::WorkloadSelector, action, rules)
    };
    let deny_a = || one(from_ns("a"));
    check_cases(vec![
        Case {
            label: "no policy",
            policies: vec![],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "global DENY applies",
            policies: vec![global("g", PolicyAction::Deny, deny_a())],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy istio-system/g",
            dry_run: None,
        },
        Case {
            label: "global ALLOW applies",
            policies: vec![global("g", PolicyAction::Allow, one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
        Case {
            label: "namespace DENY of the destination's namespace",
            policies: vec![deny("d", deny_a())],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: None,
        },
        Case {
            label: "namespace policies of another namespace do not apply",
            policies: vec![
                policy(
                    "other",
                    "d",
                    PolicyScope::Namespace,
                    PolicyAction::Deny,
                    deny_a(),
                ),
                policy(
                    "other",
                    "al",
                    PolicyScope::Namespace,
                    PolicyAction::Allow,
                    vec![],
                ),
            ],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "a selector policy applies to the workload naming it",
            policies: vec![selector(NS, "s", PolicyAction::Deny, deny_a())],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s",
            dry_run: None,
        },
        Case {
            label: "a selector policy does not apply to a workload not naming it",
            policies: vec![
                selector(NS, "s", PolicyAction::Deny, deny_a()),
                selector(NS, "sa", PolicyAction::Allow, vec![]),
            ],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "a named selector ALLOW from another namespace applies",
            policies: vec![selector(
                "other",
                "s",
                PolicyAction::Allow,
                one(from_ns("a")),
            )],
            refs: &["other/s"],
            conn: ab(),
            verdict: "allow: policy other/s",
            dry_run: None,
        },
        Case {
            label: "ALLOW policies of all three scopes: any one allows",
            policies: vec![
                global("g", PolicyAction::Allow, one(from_ns("x"))),
                allow("n", one(from_ns("y"))),
                selector(NS, "s", PolicyAction::Allow, one(from_ns("a"))),
            ],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "allow: policy ns/s",
            dry_run: None,
        },
        Case {
            label: "ALLOW policies of all three scopes: none matches",
            policies: vec![
                global("g", PolicyAction::Allow, one(from_ns("x"))),
                allow("n", one(from_ns("y"))),
                selector(NS, "s", PolicyAction::Allow, one(from_ns("z"))),
            ],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
    ]);
}

#[test]
fn verdict_order() {
    let all = || vec![vec![]];
    check_cases(vec![
        Case {
            label: "ALLOW matches",
            policies: vec![allow("al", one(from_ns("a")))],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: None,
        },
        Case {
            label: "ALLOW does not match",
            policies: vec![allow("al", one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
        Case {
            label: "a non-matching DENY alone allows",
            policies: vec![deny("d", one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
        Case {
            label: "DENY beats an allow-all",
            policies: vec![allow("al", all()), deny("d", one(from_ns("a")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: None,
        },
        Case {
            label: "the first matching DENY is named",
            policies: vec![
                deny("d1", one(from_ns("c"))),
                deny("d2", one(from_ns("a"))),
                deny("d3", all()),
            ],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d2",
            dry_run: None,
        },
        Case {
            label: "allow-all",
            policies: vec![allow("al", all())],
            refs: &[],
            conn: Conn::plain(),
            verdict: "allow: policy ns/al",
            dry_run: None,
        },
        Case {
            label: "ALLOW with no rules allows nothing",
            policies: vec![allow("nothing", vec![])],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: None,
        },
        Case {
            label: "STRICT as istiod converts it: plaintext denied",
            policies: vec![deny(
                "strict",
                one(Match {
                    not_principals: vec![PRESENCE],
                    ..m()
                }),
            )],
            refs: &[],
            conn: Conn::plain(),
            verdict: "deny: policy ns/strict",
            dry_run: None,
        },
        Case {
            label: "STRICT as istiod converts it: mTLS allowed",
            policies: vec![deny(
                "strict",
                one(Match {
                    not_principals: vec![PRESENCE],
                    ..m()
                }),
            )],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
    ]);
}

/// Fail closed (a): a named policy that has not arrived denies until it does.
#[test]
fn missing_policy_denies_until_it_arrives() {
    let allow_a = || {
        policy(
            NS,
            "s",
            PolicyScope::WorkloadSelector,
            PolicyAction::Allow,
            one(from_ns("a")),
        )
    };
    check_cases(vec![
        Case {
            label: "only policy missing",
            policies: vec![],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s referenced but not yet received",
            dry_run: None,
        },
        Case {
            label: "a matching ALLOW does not override a missing policy",
            policies: vec![allow("al", vec![vec![]])],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s referenced but not yet received",
            dry_run: None,
        },
        Case {
            label: "the first missing key is named",
            policies: vec![allow_a()],
            refs: &["ns/s", "ns/gone", "ns/later"],
            conn: ab(),
            verdict: "deny: policy ns/gone referenced but not yet received",
            dry_run: None,
        },
        Case {
            label: "a matching DENY is the more precise reason",
            policies: vec![deny("d", one(from_ns("a")))],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: None,
        },
        Case {
            label: "once it arrives, it decides",
            policies: vec![allow_a()],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "allow: policy ns/s",
            dry_run: None,
        },
        Case {
            label: "missing, with a dry-run policy present",
            policies: vec![dry(deny("dd", one(from_ns("c"))))],
            refs: &["ns/s"],
            conn: ab(),
            verdict: "deny: policy ns/s referenced but not yet received",
            dry_run: Some("deny: policy ns/s referenced but not yet received"),
        },
    ]);
}

#[test]
fn dry_run() {
    let all = || vec![vec![]];
    check_cases(vec![
        Case {
            label: "a matching dry-run DENY would deny",
            policies: vec![dry(deny("dd", one(from_ns("a"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "a non-matching dry-run DENY changes nothing",
            policies: vec![dry(deny("dd", one(from_ns("c"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("allow: no ALLOW policy applies"),
        },
        Case {
            label: "a dry-run ALLOW that does not match would deny",
            policies: vec![dry(allow("da", one(from_ns("c"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: no ALLOW policy matched"),
        },
        Case {
            label: "a dry-run ALLOW that matches would allow",
            policies: vec![dry(allow("da", one(from_ns("a"))))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "a dry-run ALLOW would admit what enforced policies deny",
            policies: vec![
                allow("al", one(from_ns("c"))),
                dry(allow("da", one(from_ns("a")))),
            ],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "when both match, the dry-run ALLOW is named",
            policies: vec![allow("al", all()), dry(allow("da", all()))],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "an enforced ALLOW still allows beside a failing dry-run ALLOW",
            policies: vec![
                allow("al", one(from_ns("a"))),
                dry(allow("da", one(from_ns("c")))),
            ],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: Some("allow: policy ns/al"),
        },
        Case {
            label: "the dry-run DENY is named even when an enforced one matches",
            policies: vec![deny("d", all()), dry(deny("dd", all()))],
            refs: &[],
            conn: ab(),
            verdict: "deny: policy ns/d",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "a dry-run DENY never denies",
            policies: vec![dry(deny("dd", all())), allow("al", all())],
            refs: &[],
            conn: ab(),
            verdict: "allow: policy ns/al",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "a dry-run ALLOW never allows",
            policies: vec![dry(allow("da", all())), allow("al", one(from_ns("c")))],
            refs: &[],
            conn: ab(),
            verdict: "deny: no ALLOW policy matched",
            dry_run: Some("allow: policy ns/da (dry-run)"),
        },
        Case {
            label: "a dry-run ALLOW alone is not an ALLOW policy for the verdict",
            policies: vec![dry(allow("da", vec![]))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: no ALLOW policy matched"),
        },
        Case {
            label: "dry-run degenerate DENY would deny",
            policies: vec![dry(deny("dd", one(m())))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: Some("deny: policy ns/dd (dry-run)"),
        },
        Case {
            label: "dry-run policies of another namespace are not reported",
            policies: vec![dry(policy(
                "other",
                "dd",
                PolicyScope::Namespace,
                PolicyAction::Deny,
                all(),
            ))],
            refs: &[],
            conn: ab(),
            verdict: "allow: no ALLOW policy applies",
            dry_run: None,
        },
    ]);
}

#[test]
fn decision_helpers_and_display() {
    let snap = snapshot([dry(deny("dd", vec![vec![]])), allow("al", vec![vec![]])]);
    let d = decide(&snap, &workload(&[]), &ab());
    assert!(d.is_allowed());
    assert!(d.dry_run_flips());
    assert_eq!(
        d.to_string(),
        "allow: policy ns/al [dry-run: deny: policy ns/dd (dry-run)]"
    );
    assert_eq!(d.verdict.policy().map(|p| &*p.name), Some("al"));

    let snap = snapshot([deny("d", vec![vec![]])]);
    let d = decide(&snap, &workload(&[]), &ab());
    assert!(!d.is_allowed());
    assert!(!d.dry_run_flips());
    assert_eq!(d.to_string(), "deny: policy ns/d");

    let d = decide(&snapshot([]), &workload(&["ns/x"]), &ab());
    assert!(!d.is_allowed());
    assert_eq!(d.verdict, Verdict::PolicyNotReceived("ns/x".into()));
    assert_eq!(d.verdict.policy(), None);
}

/// istiod's encodings, read through the local YAML source: allow-all, deny-all, STRICT, and a
/// DENY rule whose HTTP-only group was emptied.
#[test]
fn from_local_yaml() {
    let snap = crate::xds::local::parse(
        r#"
policies:
- {name: allow-all, namespace: ns, scope: Namespace, action: Allow, rules: [[]]}
- name: strict
  namespace: istio-system
  scope: Global
  action: Deny
  rules: [[[{notPrincipals: [{Presence: []}]}]]]
- name: http-only-deny
  namespace: ns
  scope: WorkloadSelector
  action: Deny
  rules: [[[{}]]]
"#,
    )
    .unwrap();
    let plain = decide(&snap, &workload(&[]), &Conn::plain());
    assert_eq!(
        plain.verdict.to_string(),
        "deny: policy istio-system/strict"
    );
    let mtls = decide(&snap, &workload(&[]), &ab());
    assert_eq!(mtls.verdict.to_string(), "allow: policy ns/allow-all");
    let selected = decide(&snap, &workload(&["ns/http-only-deny"]), &ab());
    assert_eq!(
        selected.verdict.to_string(),
        "deny: policy ns/http-only-deny"
    );
}
