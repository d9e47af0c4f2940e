//! Tests for `rbac::changes`: a table of changes and whom each reaches, and a property test
//! that whatever [`Affected::between`] leaves out decides exactly as before.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::identity::Identity;
use crate::rbac::{Connection, Decision, authorize};
use crate::state::{Match, PolicyAction, SnapshotBuilder, StringMatch};

/// A workload in the test universe: uid, namespace, the policy keys it names, its IP's last
/// octet.
type W = (&'static str, &'static str, Vec<&'static str>, u8);

fn workload((uid, ns, refs, octet): &W) -> Workload {
    Workload {
        uid: (*uid).into(),
        name: (*uid).into(),
        namespace: (*ns).into(),
        service_account: "sa".into(),
        node: "n".into(),
        workload_ips: vec![IpAddr::from([10, 0, 0, *octet])],
        authorization_policies: refs.iter().map(|r| Arc::from(*r)).collect(),
        ..Workload::default()
    }
}

fn policy(key: &str, scope: PolicyScope, action: PolicyAction, principal: &str) -> Authorization {
    let (namespace, name) = key.split_once('/').unwrap();
    Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action,
        dry_run: false,
        rules: vec![vec![vec![Match {
            principals: vec![StringMatch::Exact(principal.into())],
            ..Match::default()
        }]]],
    }
}

fn snapshot(workloads: &[W], policies: &[Authorization]) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for w in workloads {
        b.add_workload(workload(w), vec![]);
    }
    for p in policies {
        b.add_policy(p.clone());
    }
    b.build().unwrap_or_else(|e| panic!("test snapshot: {e}"))
}

fn universe() -> Vec<W> {
    vec![
        ("a1", "a", vec![], 1),
        ("a2", "a", vec!["a/selected"], 2),
        ("b1", "b", vec![], 3),
    ]
}

/// Which of the universe's workloads `change` reaches, taking `base` to `changed`.
fn reached(base: &Snapshot, changed: &Snapshot) -> Vec<&'static str> {
    let a = Affected::between(base, changed);
    let mut hit: Vec<_> = ["a1", "a2", "b1", "c1"]
        .into_iter()
        .filter(|uid| a.affects(uid, changed.workload_by_uid(uid).map(|w| &**w)))
        .collect();
    if a.all() {
        hit.push("ALL");
    }
    hit
}

#[test]
fn each_change_reaches_exactly_the_workloads_whose_decision_it_can_change() {
    use PolicyAction::{Allow, Deny};
    use PolicyScope::{Global, Namespace, WorkloadSelector};
    let base_policies = vec![
        policy("a/ns-a", Namespace, Allow, "x"),
        policy("a/selected", WorkloadSelector, Deny, "y"),
        policy("z/elsewhere", Namespace, Deny, "y"),
    ];
    let base = snapshot(&universe(), &base_policies);
    let with = |edit: &dyn Fn(&mut Vec<Authorization>, &mut Vec<W>)| {
        let (mut p, mut w) = (base_policies.clone(), universe());
        edit(&mut p, &mut w);
        snapshot(&w, &p)
    };
    let none: Vec<&str> = vec![];
    // The same objects, built again: nothing.
    let same = with(&|_, _| {});
    assert!(Affected::between(&base, &same).is_empty());
    assert!(Affected::between(&base, &base).is_empty());
    // A policy of a namespace without these workloads: nothing here, though the change is real.
    let elsewhere = with(&|p, _| p[2] = policy("z/elsewhere", Namespace, Deny, "q"));
    assert!(!Affected::between(&base, &elsewhere).is_empty());
    assert_eq!(reached(&base, &elsewhere), none);
    let added_elsewhere = with(&|p, _| p.push(policy("z/new", Namespace, Allow, "q")));
    assert_eq!(reached(&base, &added_elsewhere), none);
    // A namespace policy: every workload of that namespace.
    let ns_a = with(&|p, _| p[0] = policy("a/ns-a", Namespace, Allow, "q"));
    assert_eq!(reached(&base, &ns_a), ["a1", "a2"]);
    let removed = with(&|p, _| {
        p.remove(0);
    });
    assert_eq!(reached(&base, &removed), ["a1", "a2"]);
    // A selected policy: only the workload naming it, also when it disappears (which denies).
    let sel = with(&|p, _| p[1] = policy("a/selected", WorkloadSelector, Deny, "q"));
    assert_eq!(reached(&base, &sel), ["a2"]);
    let sel_gone = with(&|p, _| {
        p.remove(1);
    });
    assert_eq!(reached(&base, &sel_gone), ["a2"]);
    // A global policy: everything.
    let global = with(&|p, _| p.push(policy("istio-system/g", Global, Deny, "q")));
    assert_eq!(reached(&base, &global), ["a1", "a2", "b1", "c1", "ALL"]);
    // A policy moving from another namespace to the root namespace's scope: everything.
    let moved = with(&|p, _| p[2].scope = Global);
    assert!(Affected::between(&base, &moved).all());
    // Workload changes: its namespace and named policies count, its address does not.
    let renamed = with(&|_, w| w[2].1 = "a");
    assert_eq!(reached(&base, &renamed), ["b1"]);
    let names = with(&|_, w| w[0].2 = vec!["z/elsewhere"]);
    assert_eq!(reached(&base, &names), ["a1"]);
    let moved_ip = with(&|_, w| w[0].3 = 9);
    assert_eq!(reached(&base, &moved_ip), none);
    let arrived = with(&|_, w| w.push(("c1", "c", vec![], 4)));
    assert_eq!(reached(&base, &arrived), ["c1"]);
    let left = with(&|_, w| {
        w.remove(0);
    });
    assert_eq!(reached(&base, &left), ["a1"]);
}

#[test]
fn extend_unions_and_everything_absorbs() {
    let base = snapshot(&universe(), &[]);
    let a = snapshot(
        &universe(),
        &[policy(
            "a/p",
            PolicyScope::Namespace,
            PolicyAction::Deny,
            "x",
        )],
    );
    let b = snapshot(
        &universe(),
        &[policy(
            "b/p",
            PolicyScope::Namespace,
            PolicyAction::Deny,
            "x",
        )],
    );
    let mut u = Affected::between(&base, &a);
    u.extend(&Affected::between(&base, &b));
    for uid in ["a1", "a2", "b1"] {
        assert!(
            u.affects(uid, base.workload_by_uid(uid).map(|w| &**w)),
            "{uid}"
        );
    }
    u.extend(&Affected::everything());
    assert!(u.all());
    assert_eq!(u, Affected::everything());
}

// Property: a connection to a workload `between` leaves out decides the same under both.

const UIDS: [&str; 3] = ["w0", "w1", "w2"];
const NAMESPACES: [&str; 3] = ["a", "b", "istio-system"];
const KEYS: [&str; 4] = ["a/p", "b/p", "a/q", "istio-system/g"];
const SOURCES: [&str; 2] = ["cluster.local/ns/a/sa/x", "cluster.local/ns/b/sa/y"];

/// One side of a change: each workload present or not, with its namespace and named keys; each
/// policy key present or not, with its scope, action, dry-run flag and the principal it matches.
type Side = (
    Vec<Option<(usize, Vec<usize>)>>,
    Vec<Option<(u8, bool, bool, usize)>>,
);

fn side() -> impl Strategy<Value = Side> {
    (
        proptest::collection::vec(
            proptest::option::of((
                0..NAMESPACES.len(),
                proptest::collection::vec(0..4usize, 0..3),
            )),
            UIDS.len(),
        ),
        proptest::collection::vec(
            proptest::option::of((0u8..3, any::<bool>(), any::<bool>(), 0..3usize)),
            KEYS.len(),
        ),
    )
}

fn build((workloads, policies): &Side) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for (i, w) in workloads.iter().enumerate() {
        if let Some((ns, refs)) = w {
            b.add_workload(
                Workload {
                    authorization_policies: refs.iter().map(|&k| Arc::from(KEYS[k])).collect(),
                    ..workload(&(UIDS[i], NAMESPACES[*ns], vec![], i as u8 + 1))
                },
                vec![],
            );
        }
    }
    for (k, p) in policies.iter().enumerate() {
        if let Some((scope, deny, dry, principal)) = *p {
            let scope = [
                PolicyScope::Global,
                PolicyScope::Namespace,
                PolicyScope::WorkloadSelector,
            ][usize::from(scope)];
            let action = if deny {
                PolicyAction::Deny
            } else {
                PolicyAction::Allow
            };
            // Principal 2 matches no source: an ALLOW policy that admits nobody.
            let mut p = policy(
                KEYS[k],
                scope,
                action,
                SOURCES.get(principal).copied().unwrap_or("none"),
            );
            p.dry_run = dry;
            b.add_policy(p);
        }
    }
    b.build().unwrap()
}

fn decide(s: &Snapshot, uid: &str, src: Option<&Identity>) -> Option<Decision> {
    let w = s.workload_by_uid(uid)?;
    Some(authorize(&Connection {
        src_identity: src,
        src_ip: IpAddr::from([10, 0, 0, 100]),
        dst: SocketAddr::from(([10, 0, 0, 1], 80)),
        dst_workload: w,
        snapshot: s,
    }))
}

proptest! {
    #[test]
    fn what_between_leaves_out_decides_as_before(old in side(), new in side()) {
        let (old, new) = (build(&old), build(&new));
        let affected = Affected::between(&old, &new);
        let sources: Vec<Option<Identity>> = SOURCES
            .iter()
            .map(|s| Some(format!("spiffe://{s}").parse().unwrap()))
            .chain([None])
            .collect();
        for uid in UIDS {
            if affected.affects(uid, new.workload_by_uid(uid).map(|w| &**w)) {
                continue;
            }
            for src in &sources {
                let (before, after) = (decide(&old, uid, src.as_ref()), decide(&new, uid, src.as_ref()));
                prop_assert_eq!(
                    before.map(|d| d.to_string()),
                    after.map(|d| d.to_string()),
                    "{} from {:?}", uid, src
                );
            }
        }
    }
}
