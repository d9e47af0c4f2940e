//! Results: one [`Row`] per setup × workload × connection count, each with its ratios to direct
//! measured in the same run; printed as a table and written as JSON (and, by `chart`, SVG).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::{Errors, Sample};
use crate::memory::Memory;
use crate::options::{Options, Workload};
use crate::setup::Setup;

const GIB: f64 = (1u64 << 30) as f64;

/// CPU seconds per GiB of payload moved.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    /// The proxy on the client's node (node a), `None` for direct.
    pub outbound: Option<f64>,
    /// The proxy on the server's node (node b).
    pub inbound: Option<f64>,
    /// The bench process itself: every client and server thread (the pods' applications).
    pub load: f64,
    /// All of the above: what the whole path cost.
    pub total: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Each figure divided by direct's for the same workload and connection count.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ratios {
    pub gbps: Option<f64>,
    pub rps: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    /// Total CPU per GiB (proxies + applications) over direct's (applications alone).
    pub cpu_total: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `direct`, `zring hbone uring`, …
    pub setup: String,
    pub proxy: String,
    pub mode: &'static str,
    pub driver: Option<String>,
    pub workload: &'static str,
    pub conns: usize,
    pub secs: f64,
    pub requests: u64,
    pub bytes: u64,
    /// Payload throughput (bulk only).
    pub gbps: Option<f64>,
    /// Requests per second (rr, crr).
    pub rps: Option<f64>,
    pub latency_us: Option<Latency>,
    pub errors: u64,
    /// Failures by stage and kind, e.g. `{"connect: connection refused": 3}`.
    pub error_kinds: Errors,
    pub cpu_s_per_gib: Cpu,
    pub vs_direct: Ratios,
}

impl Row {
    /// `cpu` is (outbound, inbound) proxy CPU (if proxied) and the bench process's own.
    pub fn new(
        setup: &Setup,
        workload: Workload,
        conns: usize,
        sample: &Sample,
        proxies: Option<(Duration, Duration)>,
        load: Duration,
    ) -> Row {
        let secs = sample.elapsed.as_secs_f64();
        let gib = sample.bytes as f64 / GIB;
        let per_gib = |d: Duration| {
            if gib > 0.0 {
                d.as_secs_f64() / gib
            } else {
                f64::NAN
            }
        };
        let h = &sample.latency;
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let (gbps, rps, latency_us) = match workload {
            Workload::Bulk => (Some(sample.bytes as f64 * 8.0 / secs / 1e9), None, None),
            Workload::Rr | Workload::Crr => (
                None,
                Some(sample.requests as f64 / secs),
                (!h.is_empty()).then(|| Latency {
                    p50: us(0.5),
                    p99: us(0.99),
                    p999: us(0.999),
                }),
            ),
        };
        let total = proxies.map_or(load, |(a, b)| a + b + load);
        Row {
            setup: setup.label(),
            proxy: setup.proxy_name().to_owned(),
            mode: setup.mode.name(),
            driver: setup.driver().map(str::to_owned),
            workload: workload.name(),
            conns,
            secs,
            requests: sample.requests,
            bytes: sample.bytes,
            gbps,
            rps,
            latency_us,
            errors: sample.errors.values().sum(),
            error_kinds: sample.errors.clone(),
            cpu_s_per_gib: Cpu {
                outbound: proxies.map(|(a, _)| per_gib(a)),
                inbound: proxies.map(|(_, b)| per_gib(b)),
                load: per_gib(load),
                total: per_gib(total),
            },
            vs_direct: Ratios::default(),
        }
    }

    /// Fills `vs_direct` from the direct row of the same workload and connection count.
    pub fn compare(&mut self, direct: &Row) {
        let r = |a: Option<f64>, b: Option<f64>| Some(a? / b?).filter(|x| x.is_finite());
        let (l, d) = (self.latency_us, direct.latency_us);
        self.vs_direct = Ratios {
            gbps: r(self.gbps, direct.gbps),
            rps: r(self.rps, direct.rps),
            p50: r(l.map(|l| l.p50), d.map(|d| d.p50)),
            p99: r(l.map(|l| l.p99), d.map(|d| d.p99)),
            p999: r(l.map(|l| l.p999), d.map(|d| d.p999)),
            cpu_total: r(
                Some(self.cpu_s_per_gib.total),
                Some(direct.cpu_s_per_gib.total),
            ),
        };
    }
}

/// Everything one run produced: what `datapath.json` holds.
#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub host: Host,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub memory: Vec<Memory>,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub kernel: String,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub secs_per_measurement: f64,
    pub zring_cores: usize,
    pub drivers: Vec<String>,
    pub conns: Vec<usize>,
    pub workloads: Vec<&'static str>,
    pub other_proxy: Option<String>,
    pub idle_conns: Option<usize>,
}

impl Report {
    pub fn new(opts: &Options) -> Report {
        Report {
            bench: "zring datapath",
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            host: Host {
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
            },
            settings: Settings {
                secs_per_measurement: opts.secs.as_secs_f64(),
                zring_cores: opts.cores,
                drivers: opts.drivers.clone(),
                conns: opts.conns.clone(),
                workloads: opts.workloads.iter().map(|w| w.name()).collect(),
                other_proxy: opts.other.as_ref().map(|o| o.binary.display().to_string()),
                idle_conns: opts.memory.then_some(opts.idle_conns),
            },
            rows: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// Rows of `workload` with `conns` connections, in run order (direct first).
    pub fn group(&self, workload: &str, conns: usize) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(move |r| r.workload == workload && r.conns == conns)
    }

    /// The whole table, as printed and as `datapath.txt`.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let s = &self.settings;
        let _ = writeln!(
            t,
            "zring data path: {} s per measurement, {} runtime(s) per zring, {} CPUs, kernel {}",
            s.secs_per_measurement, s.zring_cores, self.host.cpus, self.host.kernel
        );
        let _ = writeln!(
            t,
            "(×) is the ratio to direct for the same workload and connections, measured in this run.\n\
             CPU s/GiB: per proxy process (out = client's node, in = server's node); total adds the\n\
             pods' own CPU and its ratio compares with direct's pods alone."
        );
        for w in Workload::ALL {
            for &c in &s.conns {
                let rows: Vec<&Row> = self.group(w.name(), c).collect();
                if rows.is_empty() {
                    continue;
                }
                let _ = writeln!(t, "\n{} × {c} connection(s)", w.title());
                let head = match w {
                    Workload::Bulk => format!("{:<24} {:>17}", "setup", "Gb/s"),
                    _ => format!(
                        "{:<24} {:>17} {:>17} {:>17} {:>17}",
                        "setup", "req/s", "p50 µs", "p99 µs", "p999 µs"
                    ),
                };
                let _ = writeln!(
                    t,
                    "{head} {:>8} {:>8} {:>17} {:>6}",
                    "CPU out", "CPU in", "CPU total", "errors"
                );
                for r in rows {
                    let v = &r.vs_direct;
                    let figures = match w {
                        Workload::Bulk => cell(r.gbps, v.gbps, 2),
                        _ => {
                            let l = r.latency_us;
                            format!(
                                "{} {} {} {}",
                                cell(r.rps, v.rps, 0),
                                cell(l.map(|l| l.p50), v.p50, 0),
                                cell(l.map(|l| l.p99), v.p99, 0),
                                cell(l.map(|l| l.p999), v.p999, 0)
                            )
                        }
                    };
                    let cpu = &r.cpu_s_per_gib;
                    let opt = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
                    let _ = writeln!(
                        t,
                        "{:<24} {figures} {:>8} {:>8} {} {:>6}",
                        r.setup,
                        opt(cpu.outbound),
                        opt(cpu.inbound),
                        cell(Some(cpu.total), v.cpu_total, 2),
                        r.errors
                    );
                }
            }
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                t,
                "\nIdle HBONE connections: resident memory of each proxy (KiB) before, with the \
                 connections open and after they closed, twice over"
            );
            let _ = writeln!(
                t,
                "{:<24} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
                "setup",
                "conns",
                "side",
                "before",
                "open",
                "closed",
                "open 2",
                "closed 2",
                "bytes/conn"
            );
            for m in &self.memory {
                for side in &m.sides {
                    let mut line = format!(
                        "{:<24} {:>7} {:>9} {:>9}",
                        m.setup, m.connections, side.role, side.baseline.rss_kib
                    );
                    for r in &side.rounds {
                        let _ = write!(line, " {:>9} {:>9}", r.open.rss_kib, r.closed.rss_kib);
                    }
                    let _ = writeln!(t, "{line} {:>11.0}", side.bytes_per_conn);
                }
            }
        }
        t
    }
}

/// `value (ratio×)`, 17 wide; `-` where there is nothing.
fn cell(value: Option<f64>, ratio: Option<f64>, decimals: usize) -> String {
    match value {
        None => format!("{:>17}", "-"),
        Some(v) => {
            let r = ratio.map_or("       ".to_owned(), |r| format!("({r:>4.2}×)"));
            format!("{:>9.decimals$} {r:>7}", v)
        }
    }
}
