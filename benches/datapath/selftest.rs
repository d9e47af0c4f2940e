//! What `cargo test --benches` runs (no `--bench` argument: nothing is measured): the report's
//! arithmetic on made-up rows, so a change to the ratios, the CPU units or the targets cannot
//! silently mark the wrong thing. No root, no lab, no clock: every figure is given.

use std::path::PathBuf;
use std::time::Duration;

use crate::load::{Errors, Sample};
use crate::memory::{Memory, Reading, Round, Side};
use crate::options::{Mode, Options, OtherProxy, Workload};
use crate::report::{Report, Row};
use crate::setup::{Proxy, Setup};

fn ztunnel() -> OtherProxy {
    OtherProxy {
        binary: PathBuf::from("ztunnel"),
        name: "ztunnel".into(),
        args: Vec::new(),
        env: Vec::new(),
    }
}

fn options() -> Options {
    Options {
        secs: Duration::from_secs(1),
        rounds: 3,
        drivers: vec!["uring".into(), "legacy".into()],
        modes: vec![Mode::Hbone],
        memory: true,
        conns: vec![8],
        workloads: vec![Workload::Rr],
        cores: vec![1],
        idle_conns: 1000,
        beside: 0,
        other: Some(ztunnel()),
        other_missing: None,
        out: PathBuf::from("unused"),
        perf: None,
    }
}

fn setup(proxy: Proxy) -> Setup {
    Setup {
        mode: Mode::Hbone,
        proxy: Some(proxy),
        cores: 1,
    }
}

/// An rr row of `requests` in one second, every request taking `latency_us`, the proxies
/// spending `out` and `inn` CPU seconds.
fn rr(setup: &Setup, requests: u64, latency_us: u64, out: f64, inn: f64) -> Row {
    let mut latency = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .expect("valid histogram bounds");
    latency
        .record_n(latency_us * 1000, requests)
        .expect("in bounds");
    let sample = Sample {
        elapsed: Duration::from_secs(1),
        requests,
        bytes: requests * 2048,
        latency,
        errors: Errors::new(),
        syn_retransmits: 0,
        retransmit_timeouts: 0,
    };
    let cpu = (Duration::from_secs_f64(out), Duration::from_secs_f64(inn));
    Row::new(
        setup,
        Workload::Rr,
        8,
        &sample,
        Some(cpu),
        Duration::from_millis(100),
    )
}

fn memory(setup: &Setup, bytes_per_conn: f64) -> Memory {
    let reading = Reading { rss_kib: 0, fds: 0 };
    let side = |role| Side {
        role,
        baseline: reading,
        rounds: vec![Round {
            open: reading,
            closed: reading,
        }],
        bytes_per_conn,
        vs_peer: None,
    };
    Memory {
        setup: setup.label(),
        proxy: setup.proxy_name().to_owned(),
        cores: 1,
        connections: 1000,
        open_secs: 1.0,
        sides: vec![side("outbound"), side("inbound")],
    }
}

fn near(a: Option<f64>, b: f64, what: &str) {
    let a = a.unwrap_or_else(|| panic!("{what}: no figure"));
    assert!((a - b).abs() <= b * 0.01, "{what}: {a}, expected {b}");
}

pub fn run() {
    let uring = setup(Proxy::Zring {
        driver: "uring".into(),
    });
    let legacy = setup(Proxy::Zring {
        driver: "legacy".into(),
    });
    let other = setup(Proxy::Other(ztunnel()));
    let mut report = Report::new(&options());
    report.rows = vec![
        rr(&uring, 30_000, 100, 0.3, 0.3),
        rr(&legacy, 20_000, 50, 0.3, 0.3),
        rr(&other, 10_000, 200, 1.0, 0.4),
    ];
    report.memory = vec![memory(&uring, 8000.0), memory(&other, 5000.0)];
    report.finish();

    // CPU per 1000 requests: 0.3 s over 30 thousand requests.
    near(
        report.rows[0].cpu_per_op.outbound,
        0.01,
        "uring CPU out per 1k",
    );
    let p = report.rows[0].vs_peer.clone().expect("zring rows compare");
    near(p.throughput, 3.0, "uring / ztunnel throughput");
    near(p.cpu_outbound, 0.1, "uring / ztunnel CPU out");
    near(p.cpu_inbound, 0.25, "uring / ztunnel CPU in");
    near(p.p99, 0.5, "uring / ztunnel p99");
    assert!(
        report.rows[2].vs_peer.is_none(),
        "ztunnel is not compared with itself"
    );
    near(report.memory[0].sides[0].vs_peer, 1.6, "memory out");

    let check = |setup: &str, target: &str| {
        report
            .targets
            .rows
            .iter()
            .filter(|r| r.setup == setup)
            .flat_map(|r| &r.checks)
            .find(|c| c.target == target)
            .and_then(|c| c.pass)
            .unwrap_or_else(|| panic!("{setup}: no `{target}` check"))
    };
    for target in ["throughput", "cpu out", "cpu in", "p99", "errors"] {
        assert!(check("zring hbone uring 1c", target), "uring: {target}");
        assert!(check("zring hbone legacy 1c", target), "legacy: {target}");
    }
    // uring has 1.5× epoll's throughput and 2/3 of its CPU, but twice its p99.
    assert!(check("zring hbone uring 1c", "uring/epoll throughput"));
    assert!(check("zring hbone uring 1c", "uring/epoll cpu"));
    assert!(!check("zring hbone uring 1c", "uring/epoll p99"));
    assert!(!check("zring hbone uring 1c", "memory out"));
    assert!(!check("zring hbone uring 1c", "memory in"));
    let t = &report.targets;
    assert_eq!((t.met, t.missed, t.unknown), (12, 3, 0), "{}", t.table());

    let table = report.table();
    for needle in [
        "[3.00×]",
        "[0.50×]",
        "3.00 ✓",
        "2.00 ✗",
        "1.60 ✗",
        "targets: 12 met",
        "SYN rtx",
        "RTO",
    ] {
        assert!(
            table.contains(needle),
            "the table lacks {needle:?}:\n{table}"
        );
    }
    let svg = crate::chart::svg(&report);
    assert!(svg.contains("3.00×") && svg.ends_with("</svg>\n"));

    rounds_merge_by_median(&uring);
    println!("datapath bench self-test: report, targets and chart agree with the made-up rows");
}

/// Three rounds of one measurement become one row: each figure the median of the rounds'
/// (taken separately, so the median CPU need not come from the median-throughput round), the
/// counts summed.
fn rounds_merge_by_median(uring: &Setup) {
    let mut failed = rr(uring, 3_000, 300, 0.3, 2.4);
    failed.errors = 2;
    failed.error_kinds.insert("connect: refused".into(), 2);
    failed.syn_retransmits = 3;
    let mut stalled = rr(uring, 2_000, 200, 0.2, 0.4);
    stalled.syn_retransmits = 1;
    stalled.retransmit_timeouts = 2;
    let rounds = vec![rr(uring, 1_000, 100, 0.5, 0.1), failed, stalled];
    let m = Row::median_of(rounds);
    assert_eq!((m.rounds, m.requests, m.errors), (3, 6_000, 2));
    assert_eq!(
        m.syn_retransmits, 4,
        "SYNs sent again are summed over rounds"
    );
    assert_eq!(
        m.retransmit_timeouts, 2,
        "retransmission timeouts are summed over rounds"
    );
    assert_eq!(m.error_kinds.get("connect: refused"), Some(&2));
    near(m.rps, 2_000.0, "median requests/s");
    near(m.latency_us.map(|l| l.p99), 200.0, "median p99");
    // CPU per 1000 requests, out: 0.5, 0.1, 0.1 → 0.1; in: 0.1, 0.8, 0.2 → 0.2.
    near(m.cpu_per_op.outbound, 0.1, "median CPU out per 1k");
    near(m.cpu_per_op.inbound, 0.2, "median CPU in per 1k");
    near(m.secs.into(), 3.0, "seconds summed");
    assert_eq!(
        crate::report::median([4.0, f64::NAN, 1.0, 2.0, 3.0].into_iter()),
        Some(2.5)
    );
    assert_eq!(crate::report::median([f64::NAN].into_iter()), None);
}
