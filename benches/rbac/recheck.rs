//! The `recheck` part of `cargo bench --bench rbac`: what one policy change costs a core that
//! holds 10,000 open connections under 10,000 policies, through `core::conns::ConnTable`'s
//! real API (entries registered with `register`, no sockets).
//!
//! The node: 100 destination workloads (`w-0` … `w-99`) in 10 namespaces (`ns-0` … `ns-9`),
//! 100 connections each, from 10 service accounts; one connection to `w-0` comes from `sa/bad`.
//! The mesh: 10,000 policies: 100 `Global` DENY policies of ztunnel's bench shape (10 rules,
//! none matching, so every decision evaluates them all), one `WorkloadSelector` ALLOW policy
//! per local workload (named by it, admitting every source), and 9,800 `Namespace` DENY
//! policies of the same shape over 980 namespaces (10 in each local one).
//!
//! Each change is published as the control thread does it (`ChangeFeed::record`, timed: that
//! cost is paid once per publication, on the control thread; `build` is the snapshot's own
//! construction with `SnapshotBuilder`, for scale) and re-checked twice on the same
//! table: the full pass every core made before (`ConnTable::recheck`, still callable) and the
//! targeted pass (`ChangeFeed::since` + `ConnTable::recheck_changes`). Changes:
//! - `unrelated`: one `Namespace` policy of a namespace with no local workload changes;
//! - `related`: `w-0`'s selected policy stops admitting `sa/bad` (closes exactly 1);
//! - `namespace`: one `Namespace` policy of `ns-0` changes (10 workloads, nothing closed);
//! - `global`: one `Global` policy changes (everything is visited, nothing closed).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zring::core::conns::{ConnTable, Subject};
use zring::identity::Identity;
use zring::rbac::ChangeFeed;
use zring::state::{
    Authorization, Match, PolicyAction, PolicyScope, Snapshot, SnapshotBuilder, StringMatch,
    Workload,
};

const WORKLOADS: usize = 100;
const LOCAL_NAMESPACES: usize = 10;
const GLOBALS: usize = 100;

/// What one scenario changes, relative to the base mesh.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    None,
    Unrelated,
    Related,
    Namespace,
    Global,
}

fn policy(
    namespace: &str,
    name: &str,
    scope: PolicyScope,
    rules: Vec<Vec<Vec<Match>>>,
) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action: PolicyAction::Deny,
        dry_run: false,
        rules,
    }
}

/// The mesh of the module doc with `change` applied; `port` is the port the DENY rules name,
/// so a change of it changes a policy without changing any verdict.
fn mesh(policies: usize, change: Change) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for i in 0..WORKLOADS {
        let ns = format!("ns-{}", i % LOCAL_NAMESPACES);
        b.add_workload(
            Workload {
                uid: format!("w-{i}").into(),
                name: format!("w-{i}").into(),
                namespace: ns.as_str().into(),
                service_account: "server".into(),
                node: "node".into(),
                workload_ips: vec![dst_ip(i)],
                authorization_policies: vec![format!("{ns}/sel-{i}").into()],
                ..Workload::default()
            },
            vec![],
        );
        let mut sel = policy(
            &ns,
            &format!("sel-{i}"),
            PolicyScope::WorkloadSelector,
            vec![vec![]],
        );
        sel.action = PolicyAction::Allow;
        if i == 0 && change == Change::Related {
            sel.rules = vec![vec![vec![Match {
                not_principals: vec![StringMatch::Exact("cluster.local/ns/client/sa/bad".into())],
                ..Match::default()
            }]]];
        }
        b.add_policy(sel);
    }
    let rules = |port: u16| -> Vec<Vec<Vec<Match>>> {
        (0..10)
            .map(|_| vec![vec![super::group_on_port(port)]])
            .collect()
    };
    for i in 0..GLOBALS {
        let port = if i == 0 && change == Change::Global {
            10
        } else {
            9
        };
        b.add_policy(policy(
            "istio-system",
            &format!("deny-{i}"),
            PolicyScope::Global,
            rules(port),
        ));
    }
    let namespaced = policies.saturating_sub(GLOBALS + WORKLOADS);
    for i in 0..namespaced {
        // Namespaces ns-0 … ns-979, ten policies each: ns-0 … ns-9 are the local ones.
        let ns = format!("ns-{}", i / 10);
        let port = match change {
            Change::Unrelated if i == namespaced - 1 => 10,
            Change::Namespace if i == 0 => 10,
            _ => 9,
        };
        b.add_policy(policy(
            &ns,
            &format!("deny-{i}"),
            PolicyScope::Namespace,
            rules(port),
        ));
    }
    b.build().unwrap()
}

fn dst_ip(i: usize) -> IpAddr {
    IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1])
}

/// The node's 10,000 connections: 100 to each workload, from `client/sa/c0` … `c9`, except
/// one to `w-0` from `client/sa/bad`.
fn subjects(per_workload: usize) -> Vec<Subject> {
    let mut out = Vec::with_capacity(WORKLOADS * per_workload);
    for w in 0..WORKLOADS {
        for c in 0..per_workload {
            let sa = if w == 0 && c == 0 {
                "bad".to_string()
            } else {
                format!("c{}", c % 10)
            };
            out.push(Subject {
                src_identity: Some(Identity::new("cluster.local", "client", &sa).unwrap()),
                src_ip: IpAddr::from([10, 2, (c / 250) as u8, (c % 250) as u8 + 1]),
                dst: SocketAddr::new(dst_ip(w), 8080),
                dst_uid: format!("w-{w}").into(),
            });
        }
    }
    out
}

/// Runs the scenarios; `bench` false checks the counts on a small table instead of timing.
pub fn main(bench: bool, secs: u64) {
    let (policies, per_workload) = if bench { (10_000, 100) } else { (500, 5) };
    let built = Instant::now();
    let base = Arc::new(mesh(policies, Change::None));
    let table = ConnTable::default();
    let registrations: Vec<_> = subjects(per_workload)
        .into_iter()
        .map(|s| table.register(s))
        .collect();
    assert_eq!(
        table.recheck(&base),
        0,
        "the base mesh admits every connection"
    );
    if bench {
        println!(
            "recheck: {} connections to {WORKLOADS} workloads, {} policies, built in {:.1?}; {secs} s per measurement",
            table.len(),
            base.policy_count(),
            built.elapsed()
        );
        println!(
            "{:<10} {:>12} {:>12} {:>14} {:>10} {:>14} {:>10} {:>8} {:>9}",
            "change",
            "build (ctl)",
            "record (ctl)",
            "full pass",
            "visited",
            "targeted pass",
            "visited",
            "closed",
            "speed-up"
        );
    }
    let total = table.len();
    let scenarios = [
        ("unrelated", Change::Unrelated, 0, 0),
        ("related", Change::Related, per_workload, 1),
        (
            "namespace",
            Change::Namespace,
            per_workload * WORKLOADS / LOCAL_NAMESPACES,
            0,
        ),
        ("global", Change::Global, total, 0),
    ];
    for (name, change, want_visited, want_closed) in scenarios {
        let build = Instant::now();
        let next = Arc::new(mesh(policies, change));
        let build = build.elapsed();
        let feed = ChangeFeed::default();
        let budget = Duration::from_secs(secs);
        let (records, record_time) = timed(bench, budget, || feed.record(&base, &next));
        let targeted = || table.recheck_changes(&next, &feed.since(&base, &next));
        let pass = targeted();
        assert_eq!(
            (pass.visited, pass.closed),
            (want_visited, want_closed),
            "{name}"
        );
        // The full pass closes the same connections.
        assert_eq!(table.recheck(&next), want_closed, "{name}");
        if !bench {
            continue;
        }
        let (fulls, full_time) = timed(true, budget, || {
            black_box(table.recheck(black_box(&next)));
        });
        let (passes, pass_time) = timed(true, budget, || {
            black_box(targeted());
        });
        let per = |t: Duration, n: u64| t / n as u32;
        let (full, one) = (per(full_time, fulls), per(pass_time, passes));
        println!(
            "{name:<10} {build:>12.1?} {:>12.1?} {:>14.1?} {total:>10} {:>14.1?} {:>10} {:>8} {:>8.0}x",
            per(record_time, records),
            full,
            one,
            pass.visited,
            pass.closed,
            full.as_secs_f64() / one.as_secs_f64().max(1e-9),
        );
    }
    if !bench {
        println!(
            "recheck bench: visited and closed counts checked; `cargo bench --bench rbac` times them"
        );
    }
    drop(registrations);
}

/// Calls `f` until `budget` has passed (once when `repeat` is false); returns the calls and the
/// time taken.
fn timed(repeat: bool, budget: Duration, mut f: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0;
    loop {
        f();
        n += 1;
        let elapsed = start.elapsed();
        if !repeat || elapsed >= budget {
            return (n, elapsed);
        }
    }
}
