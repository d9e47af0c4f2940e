//! `cargo bench --bench rbac`: nanoseconds per `rbac::authorize` decision, each scenario as a
//! ratio to the empty-snapshot baseline measured in the same run, with allocations per decision.
//!
//! The large scenarios have the shape of ztunnel's own rbac bench: 10,000 global DENY policies of
//! 10 rules each, every rule one group with three namespace and three principal patterns, a
//! source and a destination network and a destination port, none of them matching, so every
//! rule of every policy is evaluated.
//! - `deny-10k`: the groups fail on their first field (the port), as in ztunnel's bench;
//! - `deny-10k-deep`: ports, addresses and namespaces all hold, only the principals fail, so
//!   every field of every group is evaluated (the worst case for this layout);
//! - `deny-10k+allow`: `deny-10k` plus one ALLOW policy, evaluated last, that matches.
//!
//!
//! Then `recheck` (`rbac/recheck.rs`): what one policy change costs a core holding 10,000
//! connections under 10,000 policies, the full re-check pass against the targeted one.
//!
//! Environment: `ZRING_BENCH_SECS` (per scenario, default 2); `ZRING_BENCH_RBAC_POLICIES`
//! (default 10000: fewer policies show the cost per rule when the policies fit in cache);
//! `ZRING_BENCH_RBAC_PART` (`decide` or `recheck`: only that part; default both). Run without
//! `--bench` (as `cargo test --benches` does), it checks each scenario's verdict, and the
//! re-check's counts, on small inputs instead.

use std::alloc::System;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use zring::identity::Identity;
use zring::rbac::{Connection, Decision, authorize};
use zring::state::{
    Authorization, Cidr, Match, PolicyAction, PolicyScope, Snapshot, SnapshotBuilder, StringMatch,
    Workload,
};

#[path = "rbac/recheck.rs"]
mod recheck;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const RULES: usize = 10;
const POLICIES: usize = 10_000;
const DUMMY_NETWORK: &str = "198.51.100.0/24";

#[derive(Clone, Copy)]
enum Shape {
    /// The port fails first.
    Shallow,
    /// Everything but the principals holds.
    Deep,
}

/// A group of ztunnel's bench shape that fails on its first field unless the destination port
/// is `port` (the connections here go to 8080).
fn group_on_port(port: u16) -> Match {
    Match {
        destination_ports: vec![port],
        ..group(Shape::Shallow)
    }
}

fn group(shape: Shape) -> Match {
    let s = |v: &str| -> std::sync::Arc<str> { v.into() };
    let strings = || {
        vec![
            StringMatch::Prefix(s("random-prefix-2b123")),
            StringMatch::Suffix(s("random-postfix-2b723")),
            StringMatch::Exact(s("random-exact-2bc13")),
        ]
    };
    let net = |c: &str| vec![Cidr::parse(c).unwrap()];
    match shape {
        Shape::Shallow => Match {
            namespaces: strings(),
            principals: strings(),
            source_ips: net(DUMMY_NETWORK),
            destination_ips: net(DUMMY_NETWORK),
            destination_ports: vec![9],
            ..Match::default()
        },
        Shape::Deep => Match {
            namespaces: {
                let mut n = strings();
                n.push(StringMatch::Exact(s("client")));
                n
            },
            principals: strings(),
            source_ips: net("10.0.0.0/8"),
            destination_ips: net("10.0.0.0/8"),
            destination_ports: vec![8080],
            ..Match::default()
        },
    }
}

fn snapshot(policies: usize, shape: Shape, with_allow: bool) -> Snapshot {
    let rules: Vec<Vec<Vec<Match>>> = (0..RULES).map(|_| vec![vec![group(shape)]]).collect();
    let mut b = SnapshotBuilder::new();
    for i in 0..policies {
        b.add_policy(Authorization {
            name: format!("deny-{i}").into(),
            namespace: "istio-system".into(),
            scope: PolicyScope::Global,
            action: PolicyAction::Deny,
            dry_run: false,
            rules: rules.clone(),
        });
    }
    if with_allow {
        // Namespace policies are evaluated after global ones: this one comes last.
        b.add_policy(Authorization {
            name: "allow-client".into(),
            namespace: "server".into(),
            scope: PolicyScope::Namespace,
            action: PolicyAction::Allow,
            dry_run: false,
            rules: vec![vec![vec![Match {
                principals: vec![StringMatch::Exact(
                    "cluster.local/ns/client/sa/client".into(),
                )],
                ..Match::default()
            }]]],
        });
    }
    b.build().unwrap()
}

struct Scenario {
    name: &'static str,
    snapshot: Snapshot,
    /// The verdict every decision must give, as the access log renders it.
    want: &'static str,
}

fn scenarios(policies: usize) -> Vec<Scenario> {
    vec![
        Scenario {
            name: "baseline (no policy)",
            snapshot: Snapshot::empty(),
            want: "allow: no ALLOW policy applies",
        },
        Scenario {
            name: "deny-10k",
            snapshot: snapshot(policies, Shape::Shallow, false),
            want: "allow: no ALLOW policy applies",
        },
        Scenario {
            name: "deny-10k-deep",
            snapshot: snapshot(policies, Shape::Deep, false),
            want: "allow: no ALLOW policy applies",
        },
        Scenario {
            name: "deny-10k+allow",
            snapshot: snapshot(policies, Shape::Shallow, true),
            want: "allow: policy server/allow-client",
        },
    ]
}

/// The one connection every scenario decides: mTLS from `client`, 10.0.0.1 → 10.0.0.2:8080.
struct Conn {
    workload: Workload,
    id: Identity,
    src_ip: IpAddr,
    dst: SocketAddr,
}

fn decide(snapshot: &Snapshot, c: &Conn) -> Decision {
    authorize(black_box(&Connection {
        src_identity: Some(&c.id),
        src_ip: c.src_ip,
        dst: c.dst,
        dst_workload: &c.workload,
        snapshot,
    }))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("ZRING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let conn = Conn {
        workload: Workload {
            uid: "server".into(),
            name: "server".into(),
            namespace: "server".into(),
            workload_ips: vec!["10.0.0.2".parse().unwrap()],
            ..Workload::default()
        },
        id: "spiffe://cluster.local/ns/client/sa/client"
            .parse()
            .unwrap(),
        src_ip: "10.0.0.1".parse().unwrap(),
        dst: "10.0.0.2:8080".parse().unwrap(),
    };

    let part = std::env::var("ZRING_BENCH_RBAC_PART").unwrap_or_default();
    if part != "decide" {
        recheck::main(bench, secs);
    }
    if part == "recheck" {
        return;
    }
    let policies = if bench {
        std::env::var("ZRING_BENCH_RBAC_POLICIES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(POLICIES)
    } else {
        100
    };
    let built = Instant::now();
    let scenarios = scenarios(policies);
    if bench {
        println!(
            "rbac: {policies} DENY policies x {RULES} rules per scenario, built in {:.1?}; {secs} s each",
            built.elapsed()
        );
    }
    let mut baseline = None;
    for s in &scenarios {
        let first = decide(&s.snapshot, &conn);
        assert_eq!(first.to_string(), s.want, "{}", s.name);
        if !bench {
            continue;
        }

        let region = Region::new(GLOBAL);
        let (n, elapsed) = run(Duration::from_secs(secs), || {
            black_box(decide(&s.snapshot, &conn));
        });
        let allocs = region.change().allocations;
        let ns = elapsed.as_nanos() as f64 / n as f64;
        let base = *baseline.get_or_insert(ns);
        let per_rule = ns / (policies * RULES) as f64;
        println!(
            "{:<22} {:>12.0} ns/decision {:>9.0}x baseline {:>6.1} ns/rule {:>5.2} allocs/decision ({n} decisions)",
            s.name,
            ns,
            ns / base,
            per_rule,
            allocs as f64 / n as f64,
        );
    }
    if !bench {
        println!(
            "rbac bench: {} scenario verdicts checked; `cargo bench --bench rbac` measures them",
            scenarios.len()
        );
    }
}

/// Calls `f` in batches until `budget` has passed; returns the calls made and the time taken.
fn run(budget: Duration, mut f: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0u64;
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            f();
        }
        n += batch;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return (n, elapsed);
        }
        // Batches grow so clock reads stay rare for the nanosecond-scale baseline.
        batch = (batch * 2).min(1 << 20);
    }
}
