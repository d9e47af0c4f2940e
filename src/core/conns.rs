//! One core's table of the connections it enforces authorization on, so that a policy change
//! reaches connections that are already open.
//!
//! Runs on one core (`RefCell`, `Cell`; never shared). Every authorized inbound connection
//! (15008, 15006) and every same-node direct connection registers what its authorization was
//! decided on ([`Subject`]) and gets a [`KillSwitch`]; its data path races the pump against the
//! switch. When the control thread publishes a new snapshot, the core's `housekeeping` task
//! ([`ConnTable::recheck`]) re-evaluates every registered connection against it and fires the
//! switch of those now denied. No lock anywhere: the table is the core's own, and the snapshot
//! arrives through arc-swap like every other read.
//!
//! Invariant: an entry lives exactly as long as its [`Registration`] guard, which the
//! connection's task holds; dropping the task (whatever ends it) removes the entry.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use crate::identity::Identity;
use crate::latch::{Latch, Wait};
use crate::rbac::{self, Decision};
use crate::state::Snapshot;

/// What a connection's authorization was decided on, kept to decide it again.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The verified peer identity; `None` for plaintext.
    pub src_identity: Option<Identity>,
    pub src_ip: IpAddr,
    /// The destination as authorized (the pod's address and port).
    pub dst: SocketAddr,
    /// The destination workload's uid, looked up again in each new snapshot.
    pub dst_uid: Arc<str>,
}

impl Subject {
    /// Decides this subject against `snapshot`; `None` when the destination workload is no
    /// longer in it (the pod is gone, and with it the connection).
    pub fn authorize(&self, snapshot: &Snapshot) -> Option<Decision> {
        let w = snapshot.workload_by_uid(&self.dst_uid)?;
        Some(rbac::authorize(&rbac::Connection {
            src_identity: self.src_identity.as_ref(),
            src_ip: self.src_ip,
            dst: self.dst,
            dst_workload: w,
            snapshot,
        }))
    }
}

/// A connection's revocation: a latch fired at most once, by [`ConnTable::recheck`], with the
/// decision that closed the connection.
#[derive(Debug, Default)]
pub struct KillSwitch(Latch<Decision>);

impl KillSwitch {
    fn fire(&self, why: Decision) {
        self.0.fire(why);
    }

    pub fn is_fired(&self) -> bool {
        self.0.is_fired()
    }

    /// Resolves once the switch has fired, with the decision that fired it.
    pub fn fired(&self) -> Wait<'_, Decision> {
        self.0.wait()
    }
}

#[derive(Debug)]
struct Entry {
    subject: Subject,
    kill: Rc<KillSwitch>,
}

#[derive(Debug, Default)]
pub struct ConnTable {
    next_id: Cell<u64>,
    entries: RefCell<HashMap<u64, Entry>>,
}

/// Keeps a connection in the table; removes it on drop.
#[derive(Debug)]
pub struct Registration<'a> {
    table: &'a ConnTable,
    id: u64,
    pub kill: Rc<KillSwitch>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.table.entries.borrow_mut().remove(&self.id);
    }
}

impl ConnTable {
    pub fn register(&self, subject: Subject) -> Registration<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let kill = Rc::new(KillSwitch::default());
        self.entries.borrow_mut().insert(
            id,
            Entry {
                subject,
                kill: kill.clone(),
            },
        );
        Registration {
            table: self,
            id,
            kill,
        }
    }

    /// Re-decides every registered connection against `snapshot` and fires the switches of
    /// those now denied. Returns how many were closed.
    pub fn recheck(&self, snapshot: &Snapshot) -> usize {
        let mut closed = 0;
        for entry in self.entries.borrow().values() {
            if let Some(decision) = entry.subject.authorize(snapshot)
                && !decision.is_allowed()
            {
                entry.kill.fire(decision);
                closed += 1;
            }
        }
        closed
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Gives back the room a burst left: a map keeps its capacity after entries leave, and
    /// 10,000 connections leave about a megabyte. Called by the core's memory keeper.
    pub fn shrink(&self) {
        let mut entries = self.entries.borrow_mut();
        if entries.capacity() > 4 * entries.len() + 64 {
            let keep = (2 * entries.len()).max(64);
            entries.shrink_to(keep);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(policy_principal: &str) -> Snapshot {
        crate::xds::local::parse(&format!(
            r#"
workloads:
- {{ uid: b, name: b, namespace: ns, serviceAccount: b, workloadIps: ["10.0.0.2"], node: n }}
policies:
- name: only
  namespace: ns
  scope: Namespace
  action: Allow
  rules: [[[{{ principals: [{{ Exact: "{policy_principal}" }}] }}]]]
"#
        ))
        .unwrap()
    }

    fn subject(sa: &str) -> Subject {
        Subject {
            src_identity: Some(Identity::new("cluster.local", "ns", sa).unwrap()),
            src_ip: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2:80".parse().unwrap(),
            dst_uid: "b".into(),
        }
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn recheck_fires_only_newly_denied_connections_and_guards_unregister() {
        let table = ConnTable::default();
        let a = table.register(subject("a"));
        let c = table.register(subject("c"));
        assert_eq!(table.recheck(&snapshot("cluster.local/ns/ns/sa/a")), 1);
        // `c` was never allowed by that snapshot: it is the one fired.
        let why = c.kill.fired().await;
        assert!(!why.is_allowed());
        assert!(!a.kill.is_fired());
        // A policy that allows `c` instead now fires `a`.
        assert_eq!(table.recheck(&snapshot("cluster.local/ns/ns/sa/c")), 1);
        assert!(!a.kill.fired().await.is_allowed());
        drop((a, c));
        assert!(table.is_empty());
        // A destination that left the snapshot is not re-decided.
        let gone = table.register(Subject {
            dst_uid: "gone".into(),
            ..subject("x")
        });
        assert_eq!(table.recheck(&snapshot("cluster.local/ns/ns/sa/a")), 0);
        drop(gone);
    }

    fn capacity(table: &ConnTable) -> usize {
        table.entries.borrow().capacity()
    }

    #[test]
    fn shrink_gives_back_what_a_burst_left() {
        let table = ConnTable::default();
        let burst: Vec<_> = (0..10_000).map(|_| table.register(subject("a"))).collect();
        let kept: Vec<_> = burst.into_iter().skip(9_990).collect();
        assert!(capacity(&table) >= 10_000);
        table.shrink();
        assert_eq!(table.len(), 10);
        assert!(capacity(&table) < 200, "{}", capacity(&table));
        // Within its working size a table is left alone.
        let before = capacity(&table);
        table.shrink();
        assert_eq!(capacity(&table), before);
        drop(kept);
    }
}
