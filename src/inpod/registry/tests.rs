//! Unit tests for the pod registry, driven request by request against a `RecordingHandler`
//! (no netns, no socket; `/dev/null` stands in for a pod's netns). They cover readiness after
//! `snapshot_sent`; duplicate adds (same netns a no-op, another netns a replacement);
//! reconnection keeping pods until the new snapshot drops those not resent; `del` (known,
//! unknown, before the snapshot); refused adds left pending, retried and blocking readiness;
//! protocol-order errors that end the connection; failed removals; `remove_all`; and the
//! metrics' gauges and counters at each step.

use super::*;
use crate::inpod::testing::{Call, RecordingHandler};
use crate::inpod::{PodNetns, WorkloadInfo};

fn pod(uid: &str, netns: u64) -> Pod {
    let fd = std::fs::File::open("/dev/null").unwrap().into();
    Pod {
        uid: uid.into(),
        info: WorkloadInfo {
            name: uid.into(),
            namespace: "default".into(),
            service_account: "sa".into(),
        },
        netns: PodNetns::new(fd, (0, netns)),
    }
}

struct Fixture {
    registry: Registry,
    handler: RecordingHandler,
    metrics: Metrics,
}

impl Fixture {
    fn new() -> Fixture {
        let mut f = Fixture {
            registry: Registry::default(),
            handler: RecordingHandler::new(),
            metrics: Metrics::default(),
        };
        f.registry.begin_connection(&f.metrics);
        f
    }

    fn apply(&mut self, r: Request) -> Result<(), ApplyError> {
        let mut h = self.handler.clone();
        self.registry.apply(r, &mut h, &self.metrics)
    }

    fn add(&mut self, uid: &str, netns: u64) -> Result<(), ApplyError> {
        self.apply(Request::Add(pod(uid, netns)))
    }

    fn reconnect(&mut self) {
        self.registry.begin_connection(&self.metrics);
    }
}

fn del(uid: &str) -> Request {
    Request::Del { uid: uid.into() }
}

#[test]
fn add_then_snapshot_makes_ready() {
    let mut f = Fixture::new();
    f.add("a", 1).unwrap();
    assert!(
        !f.metrics.snapshot().ready,
        "not ready before snapshot_sent"
    );
    f.apply(Request::SnapshotSent).unwrap();
    let m = f.metrics.snapshot();
    assert!(m.ready);
    assert_eq!((m.active_proxy_count, m.proxies_started), (1, 1));
    assert_eq!(f.handler.served(), ["a"]);
}

#[test]
fn duplicate_add_of_same_netns_is_a_no_op_and_another_netns_replaces() {
    let mut f = Fixture::new();
    f.add("a", 1).unwrap();
    f.add("a", 1).unwrap();
    assert_eq!(f.handler.calls(), [Call::Add("a".into())]);
    f.add("a", 2).unwrap();
    assert_eq!(
        f.handler.calls(),
        [
            Call::Add("a".into()),
            Call::Remove("a".into()),
            Call::Add("a".into())
        ]
    );
    assert_eq!(f.handler.pod("a").unwrap().netns.id(), (0, 2));
    let m = f.metrics.snapshot();
    assert_eq!(
        (m.active_proxy_count, m.proxies_started, m.proxies_stopped),
        (1, 2, 1)
    );
}

#[test]
fn reconnect_keeps_pods_until_the_new_snapshot_drops_the_unsent() {
    let mut f = Fixture::new();
    for uid in ["a", "b", "c"] {
        f.add(uid, 1).unwrap();
    }
    f.apply(Request::SnapshotSent).unwrap();
    f.reconnect();
    assert_eq!(
        f.handler.served(),
        ["a", "b", "c"],
        "served across the restart"
    );
    assert!(!f.metrics.snapshot().ready);
    f.add("a", 1).unwrap();
    f.apply(Request::Keep { uid: "b".into() }).unwrap();
    f.apply(Request::SnapshotSent).unwrap();
    assert_eq!(f.handler.served(), ["a", "b"]);
    assert_eq!(f.registry.enrolled(), ["a", "b"]);
    let m = f.metrics.snapshot();
    assert_eq!((m.proxies_started, m.proxies_stopped), (3, 1));
    assert!(m.ready);
}

#[test]
fn del_removes_and_unknown_del_is_acked_but_counted() {
    let mut f = Fixture::new();
    f.add("a", 1).unwrap();
    f.apply(Request::SnapshotSent).unwrap();
    f.apply(del("a")).unwrap();
    assert!(f.handler.served().is_empty());
    f.apply(del("nobody")).unwrap();
    let m = f.metrics.snapshot();
    assert_eq!(
        (m.unknown_deletes, m.proxies_stopped, m.active_proxy_count),
        (1, 1, 0)
    );
}

#[test]
fn del_before_snapshot_removes_at_once_and_survives_reconciliation() {
    let mut f = Fixture::new();
    f.add("a", 1).unwrap();
    f.apply(Request::SnapshotSent).unwrap();
    f.reconnect();
    f.add("a", 1).unwrap();
    f.apply(del("a")).unwrap();
    assert!(f.handler.served().is_empty());
    f.apply(Request::SnapshotSent).unwrap();
    assert_eq!(f.metrics.snapshot().proxies_stopped, 1, "removed once");
}

#[test]
fn refused_add_is_pending_retried_and_blocks_readiness() {
    let mut f = Fixture::new();
    f.handler.refuse("a", true);
    let err = f.add("a", 1).unwrap_err();
    assert!(!err.ends_connection());
    assert!(err.to_string().contains("test handler refuses a"), "{err}");
    f.apply(Request::SnapshotSent).unwrap();
    let m = f.metrics.snapshot();
    assert_eq!(
        (m.pending_proxy_count, m.add_failures, m.ready),
        (1, 1, false)
    );
    let mut h = f.handler.clone();
    f.registry.retry_pending(&mut h, &f.metrics);
    assert_eq!(
        f.metrics.snapshot().add_failures,
        2,
        "a failed retry counts"
    );
    f.handler.refuse("a", false);
    f.registry.retry_pending(&mut h, &f.metrics);
    let m = f.metrics.snapshot();
    assert_eq!(
        (m.pending_proxy_count, m.active_proxy_count, m.ready),
        (0, 1, true)
    );
}

#[test]
fn pending_pod_not_resent_is_dropped_by_the_snapshot() {
    let mut f = Fixture::new();
    f.handler.refuse("a", true);
    let _ = f.add("a", 1);
    f.apply(Request::SnapshotSent).unwrap();
    f.reconnect();
    assert!(
        f.registry.pending().is_empty(),
        "a new connection drops pending pods"
    );
}

#[test]
fn out_of_order_requests_end_the_connection() {
    let mut f = Fixture::new();
    f.apply(Request::SnapshotSent).unwrap();
    let keep = f.apply(Request::Keep { uid: "a".into() }).unwrap_err();
    assert!(matches!(keep, ApplyError::KeepAfterSnapshot(_)) && keep.ends_connection());
    let twice = f.apply(Request::SnapshotSent).unwrap_err();
    assert!(matches!(twice, ApplyError::SecondSnapshot) && twice.ends_connection());
    assert_eq!(f.metrics.snapshot().protocol_errors, 2);
}

#[test]
fn failed_remove_is_reported_and_the_pod_still_leaves() {
    let mut f = Fixture::new();
    f.add("a", 1).unwrap();
    f.handler.fail_remove("a");
    let err = f.apply(del("a")).unwrap_err();
    assert!(matches!(err, ApplyError::RemoveFailed { .. }) && !err.ends_connection());
    assert!(f.registry.enrolled().is_empty());
    assert_eq!(f.metrics.snapshot().remove_failures, 1);
}

#[test]
fn remove_all_empties_everything() {
    let mut f = Fixture::new();
    f.add("a", 1).unwrap();
    f.add("b", 2).unwrap();
    let mut h = f.handler.clone();
    f.registry.remove_all(&mut h, &f.metrics);
    assert!(f.handler.served().is_empty());
    assert_eq!(f.metrics.snapshot().active_proxy_count, 0);
}
