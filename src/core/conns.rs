//! One core's table of the connections it enforces authorization on, so that a policy change
//! reaches connections that are already open.
//!
//! Runs on one core (`RefCell`, `Cell`; never shared). Every authorized inbound connection
//! (15008, 15006) and every same-node direct connection registers what its authorization was
//! decided on ([`Subject`]) and gets a [`Registration`]; its data path races the pump against
//! [`Registration::revoked`]. When the control thread publishes a new snapshot, it also records what the change
//! can affect (`rbac::ChangeFeed`); the core's `housekeeping` task takes that description
//! ([`rbac::Affected`]: every connection for a root-namespace policy; else the destinations of
//! a namespace, those naming a policy, and workloads whose own inputs changed) and
//! [`ConnTable::recheck_changes`] re-evaluates only the connections to the destinations it
//! reaches, revoking those now denied. A change that reaches none of this core's
//! destinations decides nothing. No lock anywhere: the table is the core's own, and the
//! snapshot and the feed arrive through arc-swap like every other read.
//!
//! The table is indexed by destination workload uid only, not also by namespace: inbound and
//! same-node connections all go to this node's own pods, so there are few groups, and testing
//! each against a change (one hash probe for its namespace, one per policy it names) is cheaper
//! than keeping a second index current as pods come and go.
//!
//! Invariants: an entry lives exactly as long as its [`Registration`] guard, which the
//! connection's task holds; dropping the task (whatever ends it) removes the entry. An entry's
//! `slot` is its index in its group's list.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::identity::Identity;
use crate::rbac::{self, Affected, Decision};
use crate::state::{Snapshot, Workload};

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
        Some(self.decide(snapshot, w))
    }

    /// Decides this subject against `snapshot`, whose workload `dst_uid` is `w`.
    fn decide(&self, snapshot: &Snapshot, w: &Workload) -> Decision {
        rbac::authorize(&rbac::Connection {
            src_identity: self.src_identity.as_ref(),
            src_ip: self.src_ip,
            dst: self.dst,
            dst_workload: w,
            snapshot,
        })
    }
}

/// One registered connection: what its authorization was decided on, and its revocation.
/// Shared by its [`Registration`] (in the connection's task) and its group's list, one
/// allocation per connection: the switch has room for one waker inline, not a waiter list,
/// because one task waits on it, the one holding the registration (the wait takes
/// `&mut Registration`).
#[derive(Debug)]
struct Conn {
    subject: Subject,
    /// Its index in its group's list, kept current as connections leave the group.
    slot: Cell<usize>,
    /// The decision that revoked the connection, once a re-check has. Boxed: rare, and every
    /// connection carries the slot.
    revoked: OnceCell<Box<Decision>>,
    /// The task waiting for the revocation, while it waits.
    waker: RefCell<Option<Waker>>,
}

impl Conn {
    /// Revokes the connection (the first decision wins) and returns the waiting task's waker,
    /// for the caller to wake once it holds no borrow of the table.
    fn revoke(&self, why: Decision) -> Option<Waker> {
        self.revoked.set(Box::new(why)).ok()?;
        self.waker.take()
    }
}

/// What one re-check pass did, for the log, the metrics and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Connections re-decided.
    pub visited: usize,
    /// Connections now denied, revoked.
    pub closed: usize,
}

/// Totals since the table was built: what `zring_policy_rechecks_total` and
/// `zring_policy_recheck_connections_total` report for this core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Snapshot changes handled (whether or not they reached a connection).
    pub passes: u64,
    pub visited: u64,
    pub closed: u64,
}

/// The connections to one destination workload. The index that makes a re-check proportional
/// to a change: a change names destinations (`rbac::Affected`), and a core's destinations are
/// its node's own pods, so there are few groups and a change that reaches none of them costs
/// one probe per group and no decision. A list, not a map: a connection knows its index
/// ([`Conn::slot`]), so leaving is a swap with the last one, and a list costs 8 bytes per
/// connection where a map's entry cost its key and value plus its spare room.
type Group = Vec<Rc<Conn>>;

#[derive(Debug, Default)]
pub struct ConnTable {
    /// Destination workload uid → its connections.
    groups: RefCell<HashMap<Arc<str>, Group>>,
    len: Cell<usize>,
    stats: Cell<Stats>,
}

/// Keeps a connection in the table; removes it on drop.
#[derive(Debug)]
pub struct Registration<'a> {
    table: &'a ConnTable,
    conn: Rc<Conn>,
}

impl Registration<'_> {
    /// Whether a re-check has revoked the connection.
    pub fn is_revoked(&self) -> bool {
        self.conn.revoked.get().is_some()
    }

    /// Resolves once a re-check has revoked the connection, with the decision that did.
    pub fn revoked(&mut self) -> Revoked<'_> {
        Revoked { conn: &self.conn }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut groups = self.table.groups.borrow_mut();
        let uid = &self.conn.subject.dst_uid;
        if let Some(group) = groups.get_mut(uid) {
            let i = self.conn.slot.get();
            if group.get(i).is_some_and(|c| Rc::ptr_eq(c, &self.conn)) {
                group.swap_remove(i);
                if let Some(moved) = group.get(i) {
                    moved.slot.set(i);
                }
                self.table.len.set(self.table.len.get() - 1);
            }
            if group.is_empty() {
                groups.remove(uid);
            }
        }
    }
}

/// Bytes of the one heap block a registration adds (the shared [`Conn`] and its reference
/// counts), besides its 8 bytes in the group's list (`tests/idle_sizes.rs` prints it).
pub fn conn_block_size() -> usize {
    2 * std::mem::size_of::<usize>() + std::mem::size_of::<Conn>()
}

/// See [`Registration::revoked`].
#[derive(Debug)]
pub struct Revoked<'a> {
    conn: &'a Conn,
}

impl Future for Revoked<'_> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        if let Some(why) = self.conn.revoked.get() {
            return Poll::Ready(Decision::clone(why));
        }
        let waker = match self.conn.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        self.conn.waker.replace(Some(waker));
        Poll::Pending
    }
}

impl Drop for Revoked<'_> {
    fn drop(&mut self) {
        // A wait given up (its `select!` took another branch) leaves no waker behind.
        self.conn.waker.take();
    }
}

impl ConnTable {
    /// Registers a connection just authorized. The decision must have been made in the same
    /// poll as the snapshot it used was loaded (no `.await` between), so that the snapshot is
    /// no older than the one this table was last re-checked against: the changes a pass is
    /// given start there (see `rbac::ChangeFeed`).
    pub fn register(&self, subject: Subject) -> Registration<'_> {
        let mut groups = self.groups.borrow_mut();
        let group = groups.entry(subject.dst_uid.clone()).or_default();
        let conn = Rc::new(Conn {
            subject,
            slot: Cell::new(group.len()),
            revoked: OnceCell::new(),
            waker: RefCell::new(None),
        });
        group.push(conn.clone());
        self.len.set(self.len.get() + 1);
        Registration { table: self, conn }
    }

    /// Re-decides every registered connection against `snapshot` and fires the switches of
    /// those now denied. Returns how many were closed. The full pass: what a change that
    /// reaches every destination costs, and the reference the targeted pass is measured
    /// against.
    pub fn recheck(&self, snapshot: &Snapshot) -> usize {
        self.recheck_changes(snapshot, &Affected::everything())
            .closed
    }

    /// Re-decides, against `snapshot`, the connections to the destinations `affected` reaches
    /// (all of them when it says so) and fires the switches of those now denied. `affected`
    /// must cover every change since the snapshot this table was last re-checked against
    /// (`rbac::ChangeFeed::since`): a connection it leaves out decides as it did then.
    pub fn recheck_changes(&self, snapshot: &Snapshot, affected: &Affected) -> Pass {
        let mut pass = Pass::default();
        // Woken once the table is no longer borrowed: a task woken here must not find it so.
        let mut wake = Vec::new();
        if !affected.is_empty() {
            for (uid, group) in self.groups.borrow().iter() {
                let Some(w) = snapshot.workload_by_uid(uid) else {
                    // The destination is gone, and with it the connections (its pod's own
                    // removal ends them); nothing to decide against.
                    continue;
                };
                if !affected.affects(uid, Some(w)) {
                    continue;
                }
                for conn in group {
                    pass.visited += 1;
                    let decision = conn.subject.decide(snapshot, w);
                    if !decision.is_allowed() {
                        wake.extend(conn.revoke(decision));
                        pass.closed += 1;
                    }
                }
            }
        }
        wake.into_iter().for_each(Waker::wake);
        let mut stats = self.stats.get();
        stats.passes += 1;
        stats.visited += pass.visited as u64;
        stats.closed += pass.closed as u64;
        self.stats.set(stats);
        pass
    }

    /// What every pass so far did, summed.
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Gives back the room a burst left: a map keeps its capacity after entries leave, and
    /// 10,000 connections leave about a megabyte. Called by the core's memory keeper.
    pub fn shrink(&self) {
        let mut groups = self.groups.borrow_mut();
        let len = groups.len();
        if groups.capacity() > too_large(len) {
            groups.shrink_to(kept(len));
        }
        for group in groups.values_mut() {
            let len = group.len();
            if group.capacity() > too_large(len) {
                group.shrink_to(kept(len));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }
}

/// A map or list holding `len` is shrunk past this capacity...
fn too_large(len: usize) -> usize {
    4 * len + 64
}

/// ... to this one.
fn kept(len: usize) -> usize {
    (2 * len).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::ChangeFeed;

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
        let mut a = table.register(subject("a"));
        let mut c = table.register(subject("c"));
        assert_eq!(table.recheck(&snapshot("cluster.local/ns/ns/sa/a")), 1);
        // `c` was never allowed by that snapshot: it is the one fired.
        let why = c.revoked().await;
        assert!(!why.is_allowed());
        assert!(!a.is_revoked());
        // A policy that allows `c` instead now fires `a`.
        assert_eq!(table.recheck(&snapshot("cluster.local/ns/ns/sa/c")), 1);
        assert!(!a.revoked().await.is_allowed());
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

    /// A node with `b` in `ns`, and `d` and `e` in `ns2` (`e` naming `ns2/sel`, which admits
    /// everyone); `ns` admits only `sa/a`; `extra` adds policies (YAML list items).
    fn mesh(extra: &str) -> Arc<Snapshot> {
        let text = format!(
            r#"
workloads:
- {{ uid: b, name: b, namespace: ns, serviceAccount: b, workloadIps: ["10.0.0.2"], node: n }}
- {{ uid: d, name: d, namespace: ns2, serviceAccount: d, workloadIps: ["10.0.0.4"], node: n }}
- {{ uid: e, name: e, namespace: ns2, serviceAccount: e, workloadIps: ["10.0.0.5"], node: n, authorizationPolicies: [ns2/sel] }}
policies:
- {{ name: only, namespace: ns, scope: Namespace, action: Allow, rules: [[[{{ principals: [{{ Exact: cluster.local/ns/ns/sa/a }}] }}]]] }}
{extra}"#
        );
        Arc::new(crate::xds::local::parse(&text).unwrap())
    }

    fn to(uid: &str, ip: &str, sa: &str) -> Subject {
        Subject {
            dst: format!("{ip}:80").parse().unwrap(),
            dst_uid: uid.into(),
            ..subject(sa)
        }
    }

    /// A policy (YAML list item) denying `sa/<sa>` of `ns`; `action: Allow` and no rules when
    /// `sa` is empty.
    fn policy(name: &str, ns: &str, scope: &str, sa: &str) -> String {
        if sa.is_empty() {
            return format!(
                "- {{ name: {name}, namespace: {ns}, scope: {scope}, action: Allow, rules: [[]] }}\n"
            );
        }
        format!(
            "- {{ name: {name}, namespace: {ns}, scope: {scope}, action: Deny, rules: \
             [[[{{ principals: [{{ Exact: cluster.local/ns/ns/sa/{sa} }}] }}]]] }}\n"
        )
    }

    /// The control thread's part (record, publish) and the core's (since, recheck), in order.
    fn publish(table: &ConnTable, feed: &ChangeFeed, seen: &mut Arc<Snapshot>, next: &str) -> Pass {
        let next = mesh(next);
        feed.record(seen, &next);
        let previous = std::mem::replace(seen, next);
        table.recheck_changes(seen, &feed.since(&previous, seen))
    }

    #[test]
    fn a_change_re_decides_only_the_connections_it_can_affect() {
        let table = ConnTable::default();
        let feed = ChangeFeed::default();
        let sel_allows = policy("sel", "ns2", "WorkloadSelector", "");
        let mut seen = mesh(&sel_allows);
        let b_a = table.register(to("b", "10.0.0.2", "a"));
        let d_a = table.register(to("d", "10.0.0.4", "a"));
        let d_c = table.register(to("d", "10.0.0.4", "c"));
        let e_c = table.register(to("e", "10.0.0.5", "c"));
        let fired = || [&b_a, &d_a, &d_c, &e_c].map(Registration::is_revoked);
        assert_eq!(table.recheck(&seen), 0);
        let before = table.stats();

        // Unrelated: a namespace with none of these destinations. Nothing visited or closed.
        let far = policy("far", "elsewhere", "Namespace", "c");
        let pass = publish(&table, &feed, &mut seen, &format!("{sel_allows}{far}"));
        assert_eq!(pass, Pass::default());
        let after = table.stats();
        assert_eq!(after.passes, before.passes + 1);
        assert_eq!(
            (after.visited, after.closed),
            (before.visited, before.closed)
        );

        // The policy `e` names now denies `sa/c`: only `e`'s connection is decided, and closed.
        let sel_denies = policy("sel", "ns2", "WorkloadSelector", "c");
        let pass = publish(&table, &feed, &mut seen, &format!("{sel_denies}{far}"));
        assert_eq!(
            pass,
            Pass {
                visited: 1,
                closed: 1
            }
        );
        assert_eq!(fired(), [false, false, false, true]);

        // A namespace policy of `ns2` denying `sa/c`: the connections to `d` and `e` are
        // decided, and `d`'s from `c` is closed.
        let ns2 = format!(
            "{sel_denies}{far}{}",
            policy("no-c", "ns2", "Namespace", "c")
        );
        let pass = publish(&table, &feed, &mut seen, &ns2);
        assert_eq!(pass.visited, 3);
        assert_eq!(fired(), [false, false, true, true]);

        // A root-namespace policy reaches everything; denying `sa/a` closes the rest.
        let global = format!("{ns2}{}", policy("no-a", "istio-system", "Global", "a"));
        let pass = publish(&table, &feed, &mut seen, &global);
        assert_eq!(pass.visited, 4);
        assert_eq!(fired(), [true, true, true, true]);
        let total = table.stats();
        assert_eq!(total.passes, before.passes + 4);
        assert_eq!(total.visited, before.visited + 8);
    }

    #[test]
    fn a_change_reverted_before_the_core_looked_still_reaches_what_it_admitted() {
        // The core re-checked against s0; s1 (without `ns/only`, so it admits `c` to `b`) and
        // s2 (s0 again) are published before it looks again. A connection authorized against
        // s1 must be closed, though s0 and s2 are equal.
        let table = ConnTable::default();
        let feed = ChangeFeed::default();
        let s0 = mesh("");
        let s1 = Arc::new(
            crate::xds::local::parse(
                r#"
workloads:
- { uid: b, name: b, namespace: ns, serviceAccount: b, workloadIps: ["10.0.0.2"], node: n }
"#,
            )
            .unwrap(),
        );
        let s2 = mesh("");
        feed.record(&s0, &s1);
        let subject = to("b", "10.0.0.2", "c");
        assert!(subject.authorize(&s1).unwrap().is_allowed());
        let c = table.register(subject);
        feed.record(&s1, &s2);
        assert!(Affected::between(&s0, &s2).is_empty());
        let pass = table.recheck_changes(&s2, &feed.since(&s0, &s2));
        assert_eq!(
            pass,
            Pass {
                visited: 1,
                closed: 1
            }
        );
        assert!(c.is_revoked());
    }

    /// A task already waiting is woken by the pass that revokes its connection; a wait given
    /// up leaves no waker behind.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_waiting_task_is_woken_by_the_revocation() {
        let table = ConnTable::default();
        let mut c = table.register(subject("c"));
        let given_up =
            monoio::time::timeout(std::time::Duration::from_millis(1), c.revoked()).await;
        assert!(given_up.is_err());
        assert!(c.conn.waker.take().is_none());
        let recheck = async {
            monoio::time::sleep(std::time::Duration::from_millis(2)).await;
            table.recheck(&snapshot("cluster.local/ns/ns/sa/a"))
        };
        let (why, closed) = monoio::join!(c.revoked(), recheck);
        assert!(!why.is_allowed());
        assert_eq!(closed, 1);
    }

    /// Connections leave their group in any order; each one left is still reached by a pass,
    /// at its own index.
    #[test]
    fn leaving_in_any_order_keeps_the_rest_reachable() {
        let table = ConnTable::default();
        let mut regs: Vec<Option<Registration<'_>>> = (0..40)
            .map(|i| Some(table.register(subject(if i % 2 == 0 { "a" } else { "c" }))))
            .collect();
        for i in [0, 39, 7, 8, 20, 21, 22, 1, 38, 15] {
            regs[i] = None;
        }
        assert_eq!(table.len(), 30);
        {
            let groups = table.groups.borrow();
            for (i, conn) in groups["b"].iter().enumerate() {
                assert_eq!(conn.slot.get(), i);
            }
        }
        assert_eq!(table.recheck(&snapshot("cluster.local/ns/ns/sa/a")), 15);
        for (i, reg) in regs.iter().enumerate() {
            if let Some(reg) = reg {
                assert_eq!(reg.is_revoked(), i % 2 == 1, "connection {i}");
            }
        }
        drop(regs);
        assert!(table.is_empty());
        assert!(table.groups.borrow().is_empty());
    }

    /// The room the table holds: its groups and their connections.
    fn capacity(table: &ConnTable) -> usize {
        let groups = table.groups.borrow();
        groups.capacity() + groups.values().map(Vec::capacity).sum::<usize>()
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
