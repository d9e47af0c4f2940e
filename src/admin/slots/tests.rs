//! The eviction policy and the deadlines, on hand-made views (no sockets, no clock).

use super::*;

const GRACE: Duration = Duration::from_secs(2);

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

fn view(t0: Instant, accepted: u64, phase: Phase, since: u64, served: u32) -> View {
    View {
        accepted: at(t0, accepted),
        phase,
        since: at(t0, since),
        served,
        blocked: None,
    }
}

/// The longest-waiting reclaimable connection goes first, whatever its kind; connections
/// being answered never go, unless their client stopped reading beyond the grace.
#[test]
fn the_longest_waiting_reclaimable_connection_gives_way() {
    let t0 = Instant::now();
    let now = at(t0, 100);
    let busy = view(t0, 0, Phase::Busy, 1, 1);
    let fresh = view(t0, 90, Phase::Waiting, 90, 0);
    let partial = view(t0, 80, Phase::Head, 80, 0);
    let idle = view(t0, 10, Phase::Waiting, 85, 3);
    let keepalive_head = view(t0, 10, Phase::Head, 95, 2);

    // Nothing reclaimable: the newcomer is refused.
    assert_eq!(victim([busy, busy], now, GRACE), None);
    assert_eq!(victim([], now, GRACE), None);
    // The partial head (waiting since 80) before the idle one (since 85) and the fresh one
    // (since 90); a kept-alive connection's new head is timed from its first byte (95).
    let all = [busy, fresh, idle, partial, keepalive_head];
    assert_eq!(victim(all, now, GRACE), Some((3, Reclaim::Incomplete)));
    assert_eq!(
        victim([busy, fresh, idle, keepalive_head], now, GRACE),
        Some((2, Reclaim::Idle))
    );
    assert_eq!(
        victim([busy, fresh, keepalive_head], now, GRACE),
        Some((1, Reclaim::Incomplete))
    );
    // Ties: the first in the table.
    assert_eq!(
        victim([busy, fresh, fresh], now, GRACE),
        Some((1, Reclaim::Incomplete))
    );

    // A blocked write: protected within the grace, reclaimable after it, ranked by when it
    // blocked; it counts as stalled even once its body was handed over (hyper still flushing).
    let blocked_recently = View {
        blocked: Some(at(t0, 99)),
        ..busy
    };
    assert_eq!(victim([busy, blocked_recently], now, GRACE), None);
    let stalled = View {
        blocked: Some(at(t0, 50)),
        ..busy
    };
    assert_eq!(
        victim([busy, blocked_recently, stalled], now, GRACE),
        Some((2, Reclaim::Stalled))
    );
    let flushing = View {
        blocked: Some(at(t0, 99)),
        ..idle
    };
    assert_eq!(victim([busy, flushing], now, GRACE), None);
    assert_eq!(
        victim([stalled, partial], now, GRACE),
        Some((0, Reclaim::Stalled)),
        "blocked since 50, before the head started at 80"
    );
}

#[test]
fn each_phase_has_its_deadline_within_the_lifetime() {
    let t0 = Instant::now();
    let limits = Limits::of(Server::Readiness);
    let lifetime = at(t0, 60);
    assert_eq!(limits.lifetime, Duration::from_secs(60));
    // A new connection's head, from its accept, whether or not bytes came.
    let fresh = view(t0, 0, Phase::Waiting, 0, 0);
    assert_eq!(fresh.deadline(&limits), (at(t0, 2), Expiry::Head));
    let partial = view(t0, 0, Phase::Head, 0, 0);
    assert_eq!(partial.deadline(&limits), (at(t0, 2), Expiry::Head));
    // Kept alive: idle from the last answer, then the next head from its first byte.
    let idle = view(t0, 0, Phase::Waiting, 20, 1);
    assert_eq!(idle.deadline(&limits), (at(t0, 30), Expiry::Idle));
    let next = view(t0, 0, Phase::Head, 25, 1);
    assert_eq!(next.deadline(&limits), (at(t0, 27), Expiry::Head));
    // Being answered: only the lifetime; and no phase outlives it.
    let busy = view(t0, 0, Phase::Busy, 10, 1);
    assert_eq!(busy.deadline(&limits), (lifetime, Expiry::Lifetime));
    let late = view(t0, 0, Phase::Waiting, 55, 4);
    assert_eq!(late.deadline(&limits), (lifetime, Expiry::Lifetime));
    // The metrics and admin heads get longer than the kubelet's.
    assert!(Limits::of(Server::Stats).head_timeout > limits.head_timeout);
    assert!(Limits::of(Server::Admin).head_timeout >= Limits::of(Server::Stats).head_timeout);
}

/// The table: free slots first, then the policy's victim (told to close), then refusal; a
/// connection's slot comes back when it ends, an evicted one's is already the newcomer's.
#[test]
fn the_table_evicts_at_the_cap_and_refuses_when_all_are_answering() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::of(Server::Stats)
    };
    let table = Table::new(limits);
    let now = Instant::now();
    let take = |t: Instant| match table.admit(t) {
        Admit::Taken(h) => h,
        other => panic!("{other:?}"),
    };
    let a = take(now);
    let b = take(now + Duration::from_millis(1));
    let c = take(now + Duration::from_millis(2));
    assert_eq!(table.len(), 3);
    a.slot.request(now);
    // b waited longest of the reclaimable ones (a is being answered).
    let d = match table.admit(now + Duration::from_millis(3)) {
        Admit::Evicted(h, Reclaim::Incomplete) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(b.slot.lock().evicted, Some(Reclaim::Incomplete));
    assert_eq!(table.len(), 3);
    drop(b);
    assert_eq!(table.len(), 3, "the evicted slot is d's now");
    c.slot.request(now);
    d.slot.request(now);
    assert!(matches!(table.admit(now), Admit::Refused));
    // An answer handed over: idle, reclaimable again.
    c.slot.responded(now + Duration::from_millis(5));
    let e = match table.admit(now + Duration::from_millis(6)) {
        Admit::Evicted(h, Reclaim::Idle) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(c.slot.lock().evicted, Some(Reclaim::Idle));
    drop(a);
    assert_eq!(table.len(), 2, "d and e");
    drop((c, d, e));
    assert_eq!(table.len(), 0);
}

/// Eviction wakes the connection's watch (its deadlines are the view's, tested above).
#[test]
fn the_watch_ends_on_eviction() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let limits = Limits::of(Server::Readiness);
        let table = Table::new(Limits {
            max_connections: 1,
            ..limits
        });
        let Admit::Taken(a) = table.admit(Instant::now()) else {
            panic!()
        };
        let Admit::Evicted(_b, why) = table.admit(Instant::now()) else {
            panic!()
        };
        assert_eq!(why, Reclaim::Incomplete);
        assert_eq!(
            a.slot.closed(&limits).await,
            Closed::Evicted(Reclaim::Incomplete)
        );
    });
}
