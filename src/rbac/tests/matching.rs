//! What one group matches, field by field: principals, namespaces and service accounts (each
//! with its negation, hostile identities and plaintext sources among the rows), addresses and
//! ports; fields are ANDed; then how rules, clauses and groups combine, and the degenerate
//! shapes.

use super::*;

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
