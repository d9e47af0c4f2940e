//! Tests for `rbac`, as tables, one file per concern; the helpers and the decision table they
//! share are here.
//!
//! - `matching`: every match field and its negation, hostile identities, plaintext sources,
//!   rule structure;
//! - `verdicts`: scopes, the verdict order, fail closed on a missing policy, istiod's encodings;
//! - `dry_run`: dry run, and how a decision displays;
//! - `props`: property tests against a reference evaluator.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::state::{Cidr, PolicyScope, SnapshotBuilder};

mod dry_run;
mod matching;
mod props;
mod verdicts;

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
