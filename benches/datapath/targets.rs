//! Issue 14's targets, checked on every zring row of one run: zring's figures over the other
//! proxy's (ztunnel by default) for the same mode, workload, connections and cores, and the
//! io_uring driver's over the epoll (`legacy`) driver's. Each check is a ratio and a mark, in
//! the text table's `targets:` section and in the JSON, so one run says where zring stands.
//!
//! The thresholds are the issue's, applied strictly: a ratio of 0.99 where ≥ 1 is asked is a
//! miss. Ratios between runs mean nothing; on a busy machine even one run's are noisy.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{Report, Row, ratio};

/// zring's throughput (Gb/s, requests/s) at least this times ztunnel's.
pub const THROUGHPUT_MIN: f64 = 1.5;
/// zring's CPU per operation of each process at most this times ztunnel's.
pub const CPU_MAX: f64 = 0.6;
/// zring's p99 latency at most this times ztunnel's.
pub const P99_MAX: f64 = 0.7;
/// zring's resident memory per idle HBONE connection at most this times ztunnel's.
pub const MEMORY_MAX: f64 = 0.5;

/// The traffic checks, in column order: (name, wanted).
const TRAFFIC: [(&str, &str); 8] = [
    (THROUGHPUT, "≥ 1.5"),
    (CPU_OUT, "≤ 0.6"),
    (CPU_IN, "≤ 0.6"),
    (P99, "≤ 0.7"),
    (ERRORS, "= 0"),
    (URING_THROUGHPUT, "≥ 1"),
    (URING_CPU, "≤ 1"),
    (URING_P99, "≤ 1"),
];
const THROUGHPUT: &str = "throughput";
const CPU_OUT: &str = "cpu out";
const CPU_IN: &str = "cpu in";
const P99: &str = "p99";
const ERRORS: &str = "errors";
const URING_THROUGHPUT: &str = "uring/epoll throughput";
const URING_CPU: &str = "uring/epoll cpu";
const URING_P99: &str = "uring/epoll p99";
const MEMORY_OUT: &str = "memory out";
const MEMORY_IN: &str = "memory in";

/// One target on one row.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: &'static str,
    /// The ratio it is judged on (for `errors`, the count).
    pub value: Option<f64>,
    /// `None` when a figure is missing (no peer row, no latency, …).
    pub pass: Option<bool>,
}

impl Check {
    fn at_least(target: &'static str, value: Option<f64>, min: f64) -> Check {
        Check {
            target,
            value,
            pass: value.map(|v| v >= min),
        }
    }

    fn at_most(target: &'static str, value: Option<f64>, max: f64) -> Check {
        Check {
            target,
            value,
            pass: value.map(|v| v <= max),
        }
    }

    fn mark(&self, decimals: usize) -> String {
        match (self.value, self.pass) {
            (Some(v), Some(p)) => format!("{v:.decimals$} {}", if p { "✓" } else { "✗" }),
            _ => "·".to_owned(),
        }
    }
}

/// The checks of one zring row (or one memory setup: `workload` is `memory`).
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub setup: String,
    pub workload: String,
    pub conns: Option<usize>,
    pub checks: Vec<Check>,
}

/// Every zring row's checks and how many were met.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Targets {
    /// What zring was compared with (`ztunnel`); `None`: only uring ≥ epoll was checked.
    pub peer: Option<String>,
    pub rows: Vec<TargetRow>,
    pub met: usize,
    pub missed: usize,
    /// Checks without a figure to judge.
    pub unknown: usize,
}

impl Targets {
    pub fn check(report: &Report) -> Targets {
        let zring = report.rows.iter().filter(|r| r.proxy == "zring");
        let mut rows: Vec<TargetRow> = zring.map(|r| traffic(r, report)).collect();
        let peer = report.settings.other_proxy_name.clone();
        for m in report.memory.iter().filter(|m| m.proxy == "zring") {
            let side = |role: &str| m.sides.iter().find(|s| s.role == role);
            let has_peer = peer.is_some();
            let checks = [(MEMORY_OUT, "outbound"), (MEMORY_IN, "inbound")]
                .into_iter()
                .filter(|_| has_peer)
                .map(|(t, role)| Check::at_most(t, side(role).and_then(|s| s.vs_peer), MEMORY_MAX))
                .collect();
            rows.push(TargetRow {
                setup: m.setup.clone(),
                workload: "memory".into(),
                conns: None,
                checks,
            });
        }
        let all = rows.iter().flat_map(|r| &r.checks);
        let count = |want: Option<bool>| all.clone().filter(|c| c.pass == want).count();
        Targets {
            met: count(Some(true)),
            missed: count(Some(false)),
            unknown: count(None),
            peer,
            rows,
        }
    }

    /// The `targets:` section of the text table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let peer = self.peer.as_deref().unwrap_or("the other proxy");
        let _ = writeln!(
            t,
            "targets: {} met, {} missed, {} without a figure (✓ met, ✗ missed, · no figure)",
            self.met, self.missed, self.unknown
        );
        if self.peer.is_none() {
            let _ = writeln!(
                t,
                "no other proxy ran: only zring's own checks (errors, uring ≥ epoll) are judged"
            );
        }
        let _ = writeln!(
            t,
            "zring / {peer} (same mode, workload, connections, cores): throughput ≥ {THROUGHPUT_MIN}, CPU per \
             operation of each process ≤ {CPU_MAX}, p99 ≤ {P99_MAX}, idle memory per connection ≤ {MEMORY_MAX};\n\
             uring / epoll (the same zring row on the legacy driver): throughput ≥ 1, CPU (worse of out, in) ≤ 1, p99 ≤ 1."
        );
        let mut head = format!("{:<26} {:<8} {:>5}", "setup", "workload", "conns");
        for (name, want) in TRAFFIC {
            let _ = write!(head, " {name} {want}");
        }
        let _ = writeln!(t, "{head}");
        for row in self.rows.iter().filter(|r| r.conns.is_some()) {
            let mut line = format!(
                "{:<26} {:<8} {:>5}",
                row.setup,
                row.workload,
                row.conns.unwrap_or(0)
            );
            for (name, want) in TRAFFIC {
                let mark = row
                    .checks
                    .iter()
                    .find(|c| c.target == name)
                    .map_or(String::new(), |c| {
                        c.mark(if name == ERRORS { 0 } else { 2 })
                    });
                let _ = write!(line, " {mark:>w$}", w = width(name, want));
            }
            let _ = writeln!(t, "{line}");
        }
        let mut met = format!("{:<26} {:<8} {:>5}", "met / judged", "", "");
        for (name, want) in TRAFFIC {
            let judged = self
                .rows
                .iter()
                .flat_map(|r| &r.checks)
                .filter(|c| c.target == name && c.pass.is_some());
            let yes = judged.clone().filter(|c| c.pass == Some(true)).count();
            let tally = format!("{yes}/{}", judged.count());
            let _ = write!(met, " {tally:>w$}", w = width(name, want));
        }
        let _ = writeln!(t, "{met}");
        let memory: Vec<&TargetRow> = self.rows.iter().filter(|r| r.conns.is_none()).collect();
        if memory.iter().any(|r| !r.checks.is_empty()) {
            let _ = writeln!(
                t,
                "{:<26} {:>20} {:>20}",
                "idle memory per connection",
                format!("{MEMORY_OUT} ≤ {MEMORY_MAX}"),
                format!("{MEMORY_IN} ≤ {MEMORY_MAX}")
            );
            for row in memory {
                let mark = |name: &str| {
                    row.checks
                        .iter()
                        .find(|c| c.target == name)
                        .map_or("·".to_owned(), |c| c.mark(2))
                };
                let _ = writeln!(
                    t,
                    "{:<26} {:>20} {:>20}",
                    row.setup,
                    mark(MEMORY_OUT),
                    mark(MEMORY_IN)
                );
            }
        }
        t
    }
}

/// A column as wide as its heading (`name want`).
fn width(name: &str, want: &str) -> usize {
    name.chars().count() + 1 + want.chars().count()
}

/// The checks of one zring traffic row.
fn traffic(r: &Row, report: &Report) -> TargetRow {
    let mut checks = Vec::new();
    let latency = r.latency_us.is_some() || r.workload != "bulk";
    if report.settings.other_proxy_name.is_some() {
        let p = r.vs_peer.clone().unwrap_or_default();
        checks.push(Check::at_least(THROUGHPUT, p.throughput, THROUGHPUT_MIN));
        checks.push(Check::at_most(CPU_OUT, p.cpu_outbound, CPU_MAX));
        checks.push(Check::at_most(CPU_IN, p.cpu_inbound, CPU_MAX));
        if latency {
            checks.push(Check::at_most(P99, p.p99, P99_MAX));
        }
    }
    checks.push(Check {
        target: ERRORS,
        value: Some(r.errors as f64),
        pass: Some(r.errors == 0),
    });
    if r.driver.as_deref() == Some("uring") {
        let epoll = report.rows.iter().find(|e| {
            e.proxy == "zring" && e.driver.as_deref() == Some("legacy") && e.same_point(r)
        });
        if let Some(e) = epoll {
            let (u, l) = (&r.cpu_per_op, &e.cpu_per_op);
            let cpu = [ratio(u.outbound, l.outbound), ratio(u.inbound, l.inbound)]
                .into_iter()
                .flatten()
                .reduce(f64::max);
            checks.push(Check::at_least(
                URING_THROUGHPUT,
                ratio(r.throughput(), e.throughput()),
                1.0,
            ));
            checks.push(Check::at_most(URING_CPU, cpu, 1.0));
            if latency {
                let p99 = ratio(r.latency_us.map(|l| l.p99), e.latency_us.map(|l| l.p99));
                checks.push(Check::at_most(URING_P99, p99, 1.0));
            }
        }
    }
    TargetRow {
        setup: r.setup.clone(),
        workload: r.workload.to_owned(),
        conns: Some(r.conns),
        checks,
    }
}
