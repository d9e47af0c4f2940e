//! [`ChangeFeed`]: what each published snapshot changed for authorization, computed once on the
//! control thread and read by every core, so that a core re-decides only the connections a
//! change can affect without comparing snapshots itself.
//!
//! Threads: the control thread calls [`ChangeFeed::record`] before it publishes a snapshot;
//! each core's housekeeping calls [`ChangeFeed::since`] when it sees a new one. The steps live
//! in an `ArcSwap` (no lock): the control thread replaces the list, a core reads the one it
//! loads.
//!
//! Invariants:
//! - a step names its two snapshots by `Weak`, which keeps their allocations (not their
//!   contents) alive, so an address in the feed is never reused by another snapshot while the
//!   feed holds it: comparing addresses identifies snapshots exactly;
//! - `since(a, b)` is the union of every step from `a` to `b`, so it covers every snapshot
//!   published in between too. That matters: a core may hold connections authorized against
//!   any of them (a connection authorizes against the snapshot it loaded, in the same poll),
//!   and one change reverted by the next leaves `a` and `b` equal while such a connection
//!   still needs re-deciding. When the feed does not hold the whole way from `a` to `b` (more
//!   than [`ChangeFeed::STEPS`] publications since, or a snapshot published without a
//!   record), `since` answers [`Affected::everything`]: slower, never wrong.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

use super::changes::Affected;
use crate::state::Snapshot;

/// One publication: from the snapshot it replaced to the one published.
#[derive(Debug)]
struct Step {
    from: Weak<Snapshot>,
    to: Weak<Snapshot>,
    affected: Arc<Affected>,
}

/// The last [`ChangeFeed::STEPS`] publications and what each changed. See the module doc.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    /// Oldest first.
    steps: ArcSwap<Vec<Step>>,
}

impl ChangeFeed {
    /// How many publications the feed remembers: a core looks every 100 ms, so this covers
    /// bursts of publications far faster than any control plane sends them.
    pub const STEPS: usize = 64;

    /// Control thread: computes what changes from `from` (the snapshot published now) to `to`
    /// (the one about to replace it) and remembers it. Call before publishing `to`, so a core
    /// that sees `to` finds its step.
    pub fn record(&self, from: &Arc<Snapshot>, to: &Arc<Snapshot>) {
        let affected = Arc::new(Affected::between(from, to));
        let old = self.steps.load();
        let keep = old.len().saturating_sub(Self::STEPS - 1);
        let mut steps: Vec<Step> = old[keep..]
            .iter()
            .map(|s| Step {
                from: s.from.clone(),
                to: s.to.clone(),
                affected: s.affected.clone(),
            })
            .collect();
        steps.push(Step {
            from: Arc::downgrade(from),
            to: Arc::downgrade(to),
            affected,
        });
        self.steps.store(Arc::new(steps));
    }

    /// Core: what may decide differently for a connection authorized against `from` or any
    /// snapshot published after it, under `to`. [`Affected::everything`] when the feed cannot
    /// tell.
    pub fn since(&self, from: &Arc<Snapshot>, to: &Arc<Snapshot>) -> Arc<Affected> {
        if Arc::ptr_eq(from, to) {
            return Arc::new(Affected::nothing());
        }
        let steps = self.steps.load();
        let is = |w: &Weak<Snapshot>, a: &Arc<Snapshot>| std::ptr::eq(w.as_ptr(), Arc::as_ptr(a));
        let Some(last) = steps.iter().rposition(|s| is(&s.to, to)) else {
            return Arc::new(Affected::everything());
        };
        // Walk back from `to` to `from`, each step's `from` being the previous step's `to`.
        let mut first = last;
        while !is(&steps[first].from, from) {
            let Some(prev) = first.checked_sub(1) else {
                return Arc::new(Affected::everything());
            };
            if !std::ptr::eq(steps[prev].to.as_ptr(), steps[first].from.as_ptr()) {
                return Arc::new(Affected::everything());
            }
            first = prev;
        }
        if first == last {
            return steps[last].affected.clone();
        }
        let mut union = Affected::nothing();
        for s in &steps[first..=last] {
            union.extend(&s.affected);
        }
        Arc::new(union)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(policy_namespace: &str) -> Arc<Snapshot> {
        let text = format!(
            r#"
workloads:
- {{ uid: b, name: b, namespace: ns, serviceAccount: b, workloadIps: ["10.0.0.2"], node: n }}
policies:
- {{ name: p, namespace: {policy_namespace}, scope: Namespace, action: Deny, rules: [[]] }}
"#
        );
        Arc::new(crate::xds::local::parse(&text).unwrap())
    }

    #[test]
    fn since_unions_the_steps_between_and_says_everything_when_it_cannot_tell() {
        let feed = ChangeFeed::default();
        let (s0, s1, s2) = (snapshot("ns"), snapshot("other"), snapshot("ns"));
        feed.record(&s0, &s1);
        feed.record(&s1, &s2);
        let b = s2.workload_by_uid("b").map(|w| &**w);
        // One step: its own description.
        assert!(feed.since(&s1, &s2).affects("b", b));
        // s0 and s2 are equal, but a connection authorized against s1 (which lacks the DENY
        // policy of `ns`) must still be re-decided: the union of both steps says so.
        assert!(Affected::between(&s0, &s2).is_empty());
        let both = feed.since(&s0, &s2);
        assert!(both.affects("b", b) && !both.all());
        assert!(feed.since(&s2, &s2).is_empty());
        // A snapshot the feed never saw, on either end: everything.
        let stray = snapshot("ns");
        assert!(feed.since(&stray, &s2).all());
        assert!(feed.since(&s0, &stray).all());
        // Past its memory, the feed cannot tell either.
        let mut last = s2.clone();
        for _ in 0..ChangeFeed::STEPS {
            let next = snapshot("ns");
            feed.record(&last, &next);
            last = next;
        }
        assert!(feed.since(&s0, &last).all());
        assert!(!feed.since(&s2, &last).all());
    }
}
