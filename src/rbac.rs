//! `rbac`: decides whether one connection may reach its destination workload, under Istio's L4
//! AuthorizationPolicy semantics. Owns nothing but the evaluation: the policies live in the
//! `state::Snapshot`, the verdict goes back to the caller, which logs and counts it.
//!
//! Pure: no IO, no clock, no logging, nothing spawned, no lock. A core calls [`authorize`] once
//! per accepted connection, on its own thread, with the snapshot it loaded for that connection.
//! The common case allocates nothing: a [`Decision`] names policies by `Arc` clones.
//!
//! # Which policies apply
//! For a destination workload `W`: every `Global` policy (Istio's root namespace), every
//! `Namespace` policy of `W`'s namespace, and every policy `W` names in its
//! `authorization_policies` (the `WorkloadSelector` ones istiod selected for it), in that order.
//! A policy named twice is evaluated twice, which cannot change the outcome.
//!
//! # The verdict
//! 1. an enforced DENY policy matches → deny, naming it;
//! 2. a policy `W` names is not in the snapshot → deny (see "fail closed" below);
//! 3. no enforced ALLOW policy applies → allow;
//! 4. an enforced ALLOW policy matches → allow, naming it;
//! 5. otherwise → deny, "no ALLOW policy matched".
//!
//! A policy matches when any of its rules holds; a rule holds when all of its clauses do; a
//! clause holds when any of its match groups does; a group holds when every field it sets
//! holds; a field holds when any positive entry matches and no negative entry does.
//!
//! Fields, compared on the source's identity (`Identity`), the source IP and the destination
//! socket address:
//! - `principals`: the identity without `spiffe://` (`td/ns/NS/sa/SA`), by exact, prefix or
//!   suffix text, or `Presence`. Patterns are literal: `Prefix("cluster.local/ns/a")` also
//!   covers namespace `ab`, and a pattern that itself starts with `spiffe://` never matches
//!   (as in Istio, whose principals never carry the scheme).
//! - `namespaces`: the identity's namespace, same string matches.
//! - `service_accounts`: the identity's namespace and service account, both exact. The trust
//!   domain is ignored (the TLS layer has already required the mesh's own); names are never
//!   split on dots, so `{ns: a, serviceAccount: b.c}` is the account `b.c` in `a`, nothing else.
//! - `source_ips`, `destination_ips`: `state::Cidr::contains` (IPv4-mapped IPv6 counts as IPv4).
//! - `destination_ports`: the destination port.
//!
//! # Plaintext sources (no identity)
//! A plaintext source has no principal, namespace or service account, so:
//! - it never satisfies a positive `principals`, `namespaces` or `service_accounts` entry, of
//!   any kind. ztunnel compares namespaces against `""` instead, so there `Exact("")`,
//!   `Prefix("")` and `Suffix("")` admit plaintext: zring does not;
//! - it always satisfies the negative lists (`not_principals`, `not_namespaces`,
//!   `not_service_accounts`): no entry can match a value that is absent. This is Istio's meaning
//!   and one zring needs: istiod turns PeerAuthentication STRICT into a DENY policy with
//!   `notPrincipals: [Presence]`, which must match exactly the plaintext connections;
//! - `Presence` means "an identity is present": it matches every mTLS source and no plaintext
//!   one (identities are never empty).
//!
//! # Fail closed where ztunnel fails open
//! - A policy that `W` names but that the snapshot does not hold (istiod has not sent it yet, or
//!   has just removed it) denies the connection until the snapshot has it. ztunnel skips it,
//!   which lets everything through a workload whose only ALLOW policy is in flight. The
//!   decision names the missing key.
//! - Degenerate shapes resolve toward deny. A match group with no condition at all, and a
//!   clause with no match groups, *hold* inside a DENY policy and *do not hold* inside an ALLOW
//!   policy. istiod produces empty groups when it strips what ztunnel cannot enforce (HTTP
//!   methods, paths, request principals…) from a DENY rule and says the result is "more
//!   restrictive than requested"; ztunnel skips empty groups, so such a DENY policy denies
//!   nothing. zring denies. In an ALLOW policy the same shape grants nothing.
//! - A rule with no clauses is not degenerate: it is how istiod encodes Istio's `rules: [{}]`
//!   ("allow all" / "deny all"), so it matches everything under both actions. A policy with no
//!   rules at all matches nothing (Istio's "allow nothing" under ALLOW).
//!
//! # Dry run
//! Dry-run policies never change the verdict. When at least one applies, the decision also
//! carries the verdict that would result if they were enforced ([`Decision::dry_run`]), naming
//! a dry-run policy whenever one decides it ("would deny by X", "would allow by Y").
//!
//! # Policy changes
//! `changes` ([`Affected`]) says which destinations a new snapshot can decide differently for,
//! from exactly the inputs listed above ("which policies apply", plus the destination's
//! namespace and named policies); `feed` ([`ChangeFeed`]) has the control thread compute it
//! once per publication, so each core re-decides only the open connections it reaches
//! (`core::conns`).
//!
//! # Cost
//! Two passes over the applicable policies: DENY policies first, ALLOW policies only while the
//! verdict still depends on them, each stopping at the first match it needs. Within a group,
//! the cheap fields (ports, addresses) are tested before the string ones, and a field that fails
//! ends the group. No regex, no allocation, no hashing beyond one lookup per named policy and
//! pass.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::identity::Identity;
use crate::state::{
    Authorization, Match, PolicyAction, ServiceAccountMatch, Snapshot, StringMatch, Workload,
};

mod changes;
mod feed;
#[cfg(test)]
mod tests;

pub use changes::Affected;
pub use feed::ChangeFeed;

/// One authorization question: who connects, to what, and the snapshot to answer from.
/// Borrowed for the duration of one [`authorize`] call.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The peer's verified identity; `None` for a plaintext source.
    pub src_identity: Option<&'a Identity>,
    /// The client's IP as the destination pod will see it.
    pub src_ip: IpAddr,
    /// The destination address and port the client asked for (the original destination).
    pub dst: SocketAddr,
    /// The workload that owns `dst`: its namespace and named policies choose the policies.
    pub dst_workload: &'a Workload,
    /// The snapshot the caller loaded for this connection; holds every policy.
    pub snapshot: &'a Snapshot,
}

/// The outcome of [`authorize`]: the enforced verdict and, when dry-run policies apply, what
/// they would have made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The verdict if every applicable dry-run policy were enforced too; `None` when no dry-run
    /// policy applies. For logging only.
    pub dry_run: Option<Verdict>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.verdict.is_allowed()
    }

    /// Whether enforcing the dry-run policies would flip allow/deny: the case worth a log line
    /// at a level above debug.
    pub fn dry_run_flips(&self) -> bool {
        self.dry_run
            .as_ref()
            .is_some_and(|d| d.is_allowed() != self.verdict.is_allowed())
    }
}

/// Why a connection is allowed or denied. Policies are named by `Arc` (their `namespace/name`
/// is `Display`ed on demand), so building a verdict never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: no DENY policy matched and no ALLOW policy applies to the destination.
    NoAllowPolicy,
    /// Allowed by this ALLOW policy.
    AllowedBy(Arc<Authorization>),
    /// Denied by this DENY policy.
    DeniedBy(Arc<Authorization>),
    /// Denied: ALLOW policies apply to the destination and none matched.
    NoAllowMatched,
    /// Denied: the destination names this policy (`namespace/name`) and the snapshot does not
    /// hold it yet.
    PolicyNotReceived(Arc<str>),
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        match self {
            Verdict::NoAllowPolicy | Verdict::AllowedBy(_) => true,
            Verdict::DeniedBy(_) | Verdict::NoAllowMatched | Verdict::PolicyNotReceived(_) => false,
        }
    }

    /// The policy that decided, when one did.
    pub fn policy(&self) -> Option<&Arc<Authorization>> {
        match self {
            Verdict::AllowedBy(p) | Verdict::DeniedBy(p) => Some(p),
            Verdict::NoAllowPolicy | Verdict::NoAllowMatched | Verdict::PolicyNotReceived(_) => {
                None
            }
        }
    }
}

/// The access-log form: `allow: …` or `deny: …` and the reason, with the deciding policy as
/// `namespace/name` (and ` (dry-run)` when it is a dry-run policy).
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = |f: &mut fmt::Formatter<'_>, word: &str, p: &Authorization| {
            let dry = if p.dry_run { " (dry-run)" } else { "" };
            write!(f, "{word}: policy {}/{}{dry}", p.namespace, p.name)
        };
        match self {
            Verdict::NoAllowPolicy => f.write_str("allow: no ALLOW policy applies"),
            Verdict::AllowedBy(p) => named(f, "allow", p),
            Verdict::DeniedBy(p) => named(f, "deny", p),
            Verdict::NoAllowMatched => f.write_str("deny: no ALLOW policy matched"),
            Verdict::PolicyNotReceived(key) => {
                write!(f, "deny: policy {key} referenced but not yet received")
            }
        }
    }
}

/// `deny: policy ns/p` or, with dry-run policies, `allow: … [dry-run: deny: policy ns/q (dry-run)]`.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.verdict.fmt(f)?;
        match &self.dry_run {
            Some(d) => write!(f, " [dry-run: {d}]"),
            None => Ok(()),
        }
    }
}

/// Decides `conn`. See the module doc for the semantics.
pub fn authorize(conn: &Connection<'_>) -> Decision {
    let attributes = Attributes::new(conn);
    let policies = || applicable(conn.snapshot, conn.dst_workload);

    // Pass 1: every DENY policy, and an inventory of the rest.
    let mut deny = None;
    let mut dry_deny = None;
    let mut missing = None;
    let mut allow_applies = false;
    let mut dry_allow_applies = false;
    let mut dry_run_applies = false;
    for p in policies() {
        let p = match p {
            Ok(p) => p,
            Err(key) => {
                missing.get_or_insert(key);
                continue;
            }
        };
        match (p.action, p.dry_run) {
            (PolicyAction::Deny, false) => {
                if deny.is_none() && policy_matches(p, &attributes) {
                    deny = Some(p);
                }
            }
            (PolicyAction::Deny, true) => {
                dry_run_applies = true;
                if dry_deny.is_none() && policy_matches(p, &attributes) {
                    dry_deny = Some(p);
                }
            }
            (PolicyAction::Allow, false) => allow_applies = true,
            (PolicyAction::Allow, true) => {
                dry_run_applies = true;
                dry_allow_applies = true;
            }
        }
    }

    // Pass 2: ALLOW policies, only those whose outcome a verdict still depends on.
    let undecided = deny.is_none() && missing.is_none();
    let need_allow = undecided && allow_applies;
    let need_dry_allow = undecided && dry_deny.is_none() && dry_allow_applies;
    let mut allow = None;
    let mut dry_allow = None;
    if need_allow || need_dry_allow {
        for p in policies().filter_map(Result::ok) {
            if p.action != PolicyAction::Allow {
                continue;
            }
            let slot = if p.dry_run {
                need_dry_allow.then_some(&mut dry_allow)
            } else {
                Some(&mut allow)
            };
            if let Some(slot) = slot
                && slot.is_none()
                && policy_matches(p, &attributes)
            {
                *slot = Some(p);
            }
            if (allow.is_some() || !need_allow) && (dry_allow.is_some() || !need_dry_allow) {
                break;
            }
        }
    }

    let verdict = match (deny, missing, allow) {
        (Some(p), _, _) => Verdict::DeniedBy(p.clone()),
        (None, Some(key), _) => Verdict::PolicyNotReceived(key.clone()),
        (None, None, _) if !allow_applies => Verdict::NoAllowPolicy,
        (None, None, Some(p)) => Verdict::AllowedBy(p.clone()),
        (None, None, None) => Verdict::NoAllowMatched,
    };
    let dry_run = dry_run_applies.then(|| {
        // With the dry-run policies enforced, a dry-run policy is named whenever one decides.
        if let Some(p) = dry_deny.or(deny) {
            Verdict::DeniedBy(p.clone())
        } else if let Some(key) = missing {
            Verdict::PolicyNotReceived(key.clone())
        } else if !allow_applies && !dry_allow_applies {
            Verdict::NoAllowPolicy
        } else if let Some(p) = dry_allow.or(allow) {
            Verdict::AllowedBy(p.clone())
        } else {
            Verdict::NoAllowMatched
        }
    });
    Decision { verdict, dry_run }
}

/// The policies that apply to `workload`, in evaluation order; `Err(key)` for a policy the
/// workload names that `snapshot` does not hold.
fn applicable<'s>(
    snapshot: &'s Snapshot,
    workload: &'s Workload,
) -> impl Iterator<Item = Result<&'s Arc<Authorization>, &'s Arc<str>>> + 's {
    snapshot
        .global_policies()
        .iter()
        .chain(snapshot.namespace_policies(&workload.namespace))
        .map(Ok)
        .chain(
            workload
                .authorization_policies
                .iter()
                .map(|key| snapshot.policy(key).ok_or(key)),
        )
}

/// Whether `a` and `b`, as destination workloads, give every connection the same decision:
/// they agree on every field of the workload that [`authorize`] reads (through [`applicable`]).
/// `changes` relies on it to tell which workload changes matter; keep the two in step.
pub(crate) fn decision_inputs_equal(a: &Workload, b: &Workload) -> bool {
    a.namespace == b.namespace && a.authorization_policies == b.authorization_policies
}

/// The connection's attributes, each in the form the matchers compare, computed once.
struct Attributes<'a> {
    peer: Option<Peer<'a>>,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    dst_port: u16,
}

struct Peer<'a> {
    /// The identity without `spiffe://`.
    principal: &'a str,
    namespace: &'a str,
    service_account: &'a str,
}

impl<'a> Attributes<'a> {
    fn new(conn: &Connection<'a>) -> Attributes<'a> {
        Attributes {
            peer: conn.src_identity.map(|id| Peer {
                principal: id.principal(),
                namespace: id.namespace(),
                service_account: id.service_account(),
            }),
            src_ip: conn.src_ip.to_canonical(),
            dst_ip: conn.dst.ip().to_canonical(),
            dst_port: conn.dst.port(),
        }
    }
}

/// Whether `policy` matches. Degenerate shapes (an empty clause or match group) count as a
/// match in a DENY policy and as no match in an ALLOW policy: see "fail closed" in the module doc.
fn policy_matches(policy: &Authorization, s: &Attributes<'_>) -> bool {
    let degenerate = policy.action == PolicyAction::Deny;
    policy.rules.iter().any(|rule| {
        rule.iter()
            .all(|clause| clause_matches(clause, s, degenerate))
    })
}

fn clause_matches(clause: &[Match], s: &Attributes<'_>, degenerate: bool) -> bool {
    if clause.is_empty() {
        return degenerate;
    }
    clause
        .iter()
        .any(|m| group_matches(m, s).unwrap_or(degenerate))
}

/// `Some(holds)` for a group with at least one condition, `None` for a group with none.
fn group_matches(m: &Match, s: &Attributes<'_>) -> Option<bool> {
    let mut any = false;
    let peer = s.peer.as_ref();
    // Once a field fails, `any` is already true (a field with no entries cannot fail), so
    // short-circuiting never mistakes a failed group for an empty one.
    let holds = field(
        &mut any,
        &m.destination_ports,
        &m.not_destination_ports,
        |p| *p == s.dst_port,
    ) && field(
        &mut any,
        &m.destination_ips,
        &m.not_destination_ips,
        |net| net.contains(s.dst_ip),
    ) && field(&mut any, &m.source_ips, &m.not_source_ips, |net| {
        net.contains(s.src_ip)
    }) && field(&mut any, &m.namespaces, &m.not_namespaces, |sm| {
        peer.is_some_and(|p| string_matches(sm, p.namespace))
    }) && field(
        &mut any,
        &m.service_accounts,
        &m.not_service_accounts,
        |sa| peer.is_some_and(|p| account_matches(sa, p)),
    ) && field(&mut any, &m.principals, &m.not_principals, |sm| {
        peer.is_some_and(|p| string_matches(sm, p.principal))
    });
    any.then_some(holds)
}

/// "Any positive and no negative"; a field with neither list holds and leaves `any` alone.
fn field<T>(any: &mut bool, positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    if positive.is_empty() && negative.is_empty() {
        return true;
    }
    *any = true;
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(&hit)
}

fn string_matches(m: &StringMatch, value: &str) -> bool {
    match m {
        StringMatch::Exact(x) => value == &**x,
        StringMatch::Prefix(x) => value.starts_with(&**x),
        StringMatch::Suffix(x) => value.ends_with(&**x),
        StringMatch::Presence => !value.is_empty(),
    }
}

fn account_matches(m: &ServiceAccountMatch, p: &Peer<'_>) -> bool {
    p.namespace == &*m.namespace && p.service_account == &*m.service_account
}
