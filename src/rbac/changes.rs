//! What a configuration change can do to authorization: [`Affected`], the destinations whose
//! decisions may differ between two snapshots, computed by [`Affected::between`]. Pure, like
//! the rest of `rbac`; the control thread runs it once per published snapshot (`feed`), and a
//! core asks it, per destination workload it holds connections to, whether to re-decide them.
//!
//! # Why this is exact
//! [`authorize`](super::authorize) reads, besides the connection's own fixed attributes, only:
//! the `Global` policies; the `Namespace` policies of the destination's namespace; the
//! policies the destination names, looked up by key whatever their scope (a missing one
//! denies); and of the destination workload itself, its `namespace` and its
//! `authorization_policies` ([`decision_inputs_equal`](super::decision_inputs_equal)). So a
//! connection to workload `W` can decide differently under the new snapshot only if:
//! - a `Global` policy was added, removed or changed ([`Affected::all`]: every connection);
//! - a `Namespace` policy of `W`'s namespace was (`namespaces`);
//! - a policy whose key `W` names was, whatever its scope (`policies`);
//! - `W` itself appeared, disappeared, or changed its namespace or named policies
//!   (`workloads`).
//!
//! A changed policy counts under its old and its new scope, so one that moves from a
//! namespace to the root namespace reaches both. Dry-run policies count like any other: they
//! cannot flip a verdict, but a dry-run policy a workload names still denies while it is
//! missing, and telling those cases apart is not worth a security bug.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::state::{Authorization, PolicyScope, Snapshot, Workload};

/// The destinations whose authorization may differ between two snapshots. Compact: keys and
/// uids are `Arc` clones of the snapshots' own strings, and once [`Affected::all`] holds the
/// sets are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    /// A `Global` policy changed: every connection may decide differently.
    all: bool,
    /// Namespaces whose `Namespace`-scoped policies changed.
    namespaces: HashSet<Arc<str>>,
    /// Keys (`namespace/name`) of policies added, removed or changed, of any scope: they reach
    /// the workloads that name them.
    policies: HashSet<Arc<str>>,
    /// Uids of workloads added, removed, or whose namespace or named policies changed.
    workloads: HashSet<Arc<str>>,
}

impl Affected {
    /// Nothing changed.
    pub fn nothing() -> Affected {
        Affected::default()
    }

    /// Every connection may decide differently: what a core assumes when it cannot tell.
    pub fn everything() -> Affected {
        Affected {
            all: true,
            ..Affected::default()
        }
    }

    /// What changes between `old` and `new`, for authorization. Costs one key lookup per
    /// policy and per workload of either snapshot, and a deep comparison of those not shared
    /// between them (`Arc::ptr_eq` first). Allocates only for what changed.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Affected {
        let mut a = Affected::nothing();
        if std::ptr::eq(old, new) {
            return a;
        }
        let mut key = String::new();
        for p in old.policies() {
            match new.policy(policy_key(&mut key, p)) {
                None => a.policy(&key, p),
                Some(q) if !Arc::ptr_eq(p, q) && p != q => {
                    a.policy(&key, p);
                    a.policy(&key, q);
                }
                Some(_) => {}
            }
        }
        for q in new.policies() {
            if old.policy(policy_key(&mut key, q)).is_none() {
                a.policy(&key, q);
            }
        }
        for w in old.workloads() {
            match new.workload_by_uid(&w.uid) {
                Some(v) if Arc::ptr_eq(w, v) || super::decision_inputs_equal(w, v) => {}
                _ => a.workload(&w.uid),
            }
        }
        for v in new.workloads() {
            if old.workload_by_uid(&v.uid).is_none() {
                a.workload(&v.uid);
            }
        }
        a
    }

    /// Whether every connection may be affected.
    pub fn all(&self) -> bool {
        self.all
    }

    pub fn is_empty(&self) -> bool {
        !self.all
            && self.namespaces.is_empty()
            && self.policies.is_empty()
            && self.workloads.is_empty()
    }

    /// Whether connections to workload `uid` may decide differently; `now` is that workload in
    /// the new snapshot (`None`: it is gone, and connections to it are no longer re-decided).
    pub fn affects(&self, uid: &str, now: Option<&Workload>) -> bool {
        if self.all || self.workloads.contains(uid) {
            return true;
        }
        now.is_some_and(|w| {
            self.namespaces.contains(&*w.namespace)
                || w.authorization_policies
                    .iter()
                    .any(|k| self.policies.contains(&**k))
        })
    }

    /// Adds what `other` affects: the changes of two consecutive steps together.
    pub fn extend(&mut self, other: &Affected) {
        if self.all || other.all {
            *self = Affected::everything();
            return;
        }
        self.namespaces.extend(other.namespaces.iter().cloned());
        self.policies.extend(other.policies.iter().cloned());
        self.workloads.extend(other.workloads.iter().cloned());
    }

    fn policy(&mut self, key: &str, p: &Authorization) {
        if self.all {
            return;
        }
        match p.scope {
            PolicyScope::Global => {
                *self = Affected::everything();
                return;
            }
            PolicyScope::Namespace => {
                if !self.namespaces.contains(&*p.namespace) {
                    self.namespaces.insert(p.namespace.clone());
                }
            }
            PolicyScope::WorkloadSelector => {}
        }
        if !self.policies.contains(key) {
            self.policies.insert(key.into());
        }
    }

    fn workload(&mut self, uid: &Arc<str>) {
        if !self.all {
            self.workloads.insert(uid.clone());
        }
    }
}

/// `p`'s key (`namespace/name`, as `Snapshot::policy` takes it), written into `buf` so that
/// comparing two snapshots does not allocate one string per policy.
fn policy_key<'b>(buf: &'b mut String, p: &Authorization) -> &'b str {
    buf.clear();
    let _ = write!(buf, "{}/{}", p.namespace, p.name);
    buf
}

#[cfg(test)]
mod tests;
