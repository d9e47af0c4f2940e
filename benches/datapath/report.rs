//! Results: one [`Row`] per setup × workload × connection count × cores, each with its ratios to
//! direct and (zring's rows) to the other proxy, ztunnel by default, measured in the same run;
//! printed as a table and written as JSON (and, by `chart`, SVG; by `targets`, the issue's
//! pass/fail marks).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::{Errors, Sample};
use crate::memory::Memory;
use crate::options::{Options, Workload};
use crate::setup::Setup;
use crate::targets::Targets;

const GIB: f64 = (1u64 << 30) as f64;

/// The median of the figures that are numbers (NaN, a figure that could not be computed, is
/// left out); for an even count the mean of the two middle ones; `None` if there are none.
pub fn median(figures: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = figures.filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

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

/// What [`Row::cpu_per_op`] divides by: bulk moves bytes, rr answers requests on long-lived
/// connections, crr opens a connection per request.
pub fn cpu_unit(workload: Workload) -> &'static str {
    match workload {
        Workload::Bulk => "s/GiB",
        Workload::Rr => "s/1k req",
        Workload::Crr => "s/1k conn",
    }
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

/// A zring row's figures divided by the other proxy's (same mode, workload, connections and
/// cores, same run): below 1 is better for CPU and latency, above 1 for throughput.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerRatios {
    /// The other proxy's setup label.
    pub peer: String,
    /// Gb/s (bulk) or requests/s (rr, crr).
    pub throughput: Option<f64>,
    /// CPU per operation ([`Row::cpu_per_op`]) of each proxy process, and of the whole path.
    pub cpu_outbound: Option<f64>,
    pub cpu_inbound: Option<f64>,
    pub cpu_total: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `direct`, `zring hbone uring`, …
    pub setup: String,
    pub proxy: String,
    pub mode: &'static str,
    pub driver: Option<String>,
    /// Runtimes per zring / worker threads per other proxy; `None` for direct.
    pub cores: Option<usize>,
    pub workload: &'static str,
    pub conns: usize,
    /// Measurements this row is the median of (`ZRING_BENCH_ROUNDS`); `secs`, `requests`,
    /// `bytes` and the errors are their sums.
    pub rounds: usize,
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
    /// SYNs the client pod sent again (a lost SYN: a stall of a second or more, not an error).
    pub syn_retransmits: u64,
    /// Retransmission timeouts in all of the lab's namespaces (`TcpExt: TCPTimeouts`): a lost
    /// segment recovered only by the timer. With an error, tells TCP's recovery from a proxy
    /// that stopped moving bytes.
    pub retransmit_timeouts: u64,
    pub cpu_s_per_gib: Cpu,
    /// CPU seconds per operation, in [`Row::cpu_unit`]: per GiB (bulk), per 1000 requests (rr),
    /// per 1000 new connections (crr).
    pub cpu_per_op: Cpu,
    pub cpu_unit: &'static str,
    pub vs_direct: Ratios,
    /// zring rows only, when another proxy ran: zring / it.
    pub vs_peer: Option<PeerRatios>,
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
        let thousands = sample.requests as f64 / 1000.0;
        let per_op = |d: Duration| match workload {
            Workload::Bulk => per_gib(d),
            _ if thousands > 0.0 => d.as_secs_f64() / thousands,
            _ => f64::NAN,
        };
        Row {
            setup: setup.label(),
            proxy: setup.proxy_name().to_owned(),
            mode: setup.mode.name(),
            driver: setup.driver().map(str::to_owned),
            cores: setup.proxy_cores(),
            workload: workload.name(),
            conns,
            rounds: 1,
            secs,
            requests: sample.requests,
            bytes: sample.bytes,
            gbps,
            rps,
            latency_us,
            errors: sample.errors.values().sum(),
            error_kinds: sample.errors.clone(),
            syn_retransmits: sample.syn_retransmits,
            retransmit_timeouts: sample.retransmit_timeouts,
            cpu_s_per_gib: Cpu {
                outbound: proxies.map(|(a, _)| per_gib(a)),
                inbound: proxies.map(|(_, b)| per_gib(b)),
                load: per_gib(load),
                total: per_gib(total),
            },
            cpu_per_op: Cpu {
                outbound: proxies.map(|(a, _)| per_op(a)),
                inbound: proxies.map(|(_, b)| per_op(b)),
                load: per_op(load),
                total: per_op(total),
            },
            cpu_unit: cpu_unit(workload),
            vs_direct: Ratios::default(),
            vs_peer: None,
        }
    }

    /// One row from several rounds of the same measurement: every figure (throughput,
    /// latency percentiles, CPU per operation and per GiB) is the median of the rounds' own,
    /// each taken separately; durations, counts and errors are summed. A round drifts with
    /// whatever the machine does at that moment, so a figure measured once per setup and
    /// divided by another setup's, measured minutes later, carries that drift into the ratio;
    /// medians of alternating rounds carry much less of it (not none: two runs of the default
    /// bench still differed by up to ±0.2 at some rows). Ratios are filled afterwards from the merged rows.
    /// `rounds` must not be empty.
    pub fn median_of(rounds: Vec<Row>) -> Row {
        let mut out = rounds[0].clone();
        let med = |f: &dyn Fn(&Row) -> Option<f64>| median(rounds.iter().filter_map(f));
        let cpu = |f: &dyn Fn(&Row) -> &Cpu| Cpu {
            outbound: med(&|r| f(r).outbound),
            inbound: med(&|r| f(r).inbound),
            load: med(&|r| Some(f(r).load)).unwrap_or(f64::NAN),
            total: med(&|r| Some(f(r).total)).unwrap_or(f64::NAN),
        };
        out.gbps = med(&|r| r.gbps);
        out.rps = med(&|r| r.rps);
        out.latency_us = match (
            med(&|r| r.latency_us.map(|l| l.p50)),
            med(&|r| r.latency_us.map(|l| l.p99)),
            med(&|r| r.latency_us.map(|l| l.p999)),
        ) {
            (Some(p50), Some(p99), Some(p999)) => Some(Latency { p50, p99, p999 }),
            _ => None,
        };
        out.cpu_s_per_gib = cpu(&|r| &r.cpu_s_per_gib);
        out.cpu_per_op = cpu(&|r| &r.cpu_per_op);
        out.rounds = rounds.len();
        out.secs = rounds.iter().map(|r| r.secs).sum();
        out.requests = rounds.iter().map(|r| r.requests).sum();
        out.bytes = rounds.iter().map(|r| r.bytes).sum();
        out.errors = rounds.iter().map(|r| r.errors).sum();
        out.syn_retransmits = rounds.iter().map(|r| r.syn_retransmits).sum();
        out.retransmit_timeouts = rounds.iter().map(|r| r.retransmit_timeouts).sum();
        out.error_kinds = Errors::new();
        for r in &rounds {
            for (kind, n) in &r.error_kinds {
                *out.error_kinds.entry(kind.clone()).or_default() += n;
            }
        }
        out.vs_direct = Ratios::default();
        out.vs_peer = None;
        out
    }

    /// Gb/s for bulk, requests/s otherwise.
    pub fn throughput(&self) -> Option<f64> {
        self.gbps.or(self.rps)
    }

    /// Fills `vs_peer` from the other proxy's row of the same mode, workload, connections
    /// and cores.
    pub fn compare_peer(&mut self, peer: &Row) {
        let (a, b) = (&self.cpu_per_op, &peer.cpu_per_op);
        let (l, p) = (self.latency_us, peer.latency_us);
        self.vs_peer = Some(PeerRatios {
            peer: peer.setup.clone(),
            throughput: ratio(self.throughput(), peer.throughput()),
            cpu_outbound: ratio(a.outbound, b.outbound),
            cpu_inbound: ratio(a.inbound, b.inbound),
            cpu_total: ratio(Some(a.total), Some(b.total)),
            p50: ratio(l.map(|l| l.p50), p.map(|p| p.p50)),
            p99: ratio(l.map(|l| l.p99), p.map(|p| p.p99)),
            p999: ratio(l.map(|l| l.p999), p.map(|p| p.p999)),
        });
    }

    /// Whether `other` is the same measurement on another setup at the same cores.
    pub fn same_point(&self, other: &Row) -> bool {
        self.mode == other.mode
            && self.workload == other.workload
            && self.conns == other.conns
            && self.cores == other.cores
    }

    /// Fills `vs_direct` from the direct row of the same workload and connection count.
    pub fn compare(&mut self, direct: &Row) {
        let r = ratio;
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

/// `a / b` where both exist and the quotient is a number.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?).filter(|x| x.is_finite())
}

/// Everything one run produced: what `datapath.json` holds.
#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// Wall-clock seconds the whole run took (set by [`Report::finish`]).
    pub wall_secs: f64,
    pub host: Host,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub memory: Vec<Memory>,
    /// The targets, checked on every zring row against the other proxy's.
    pub targets: Targets,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub kernel: String,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub secs_per_measurement: f64,
    /// Rounds per measurement; each figure is the median of its rounds.
    pub rounds: usize,
    /// Runtimes per zring (worker threads per other proxy), one set of rows each.
    pub cores: Vec<usize>,
    pub drivers: Vec<String>,
    pub conns: Vec<usize>,
    pub workloads: Vec<&'static str>,
    pub other_proxy: Option<String>,
    /// Its rows' proxy name (`ztunnel`), what zring's figures are divided by.
    pub other_proxy_name: Option<String>,
    pub idle_conns: Option<usize>,
    /// Bulk connections run beside every measurement (`ZRING_BENCH_BESIDE`), not counted.
    pub beside_bulk: usize,
}

impl Report {
    pub fn new(opts: &Options) -> Report {
        Report {
            bench: "zring datapath",
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            wall_secs: 0.0,
            host: Host {
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
            },
            settings: Settings {
                secs_per_measurement: opts.secs.as_secs_f64(),
                rounds: opts.rounds,
                cores: opts.cores.clone(),
                drivers: opts.drivers.clone(),
                conns: opts.conns.clone(),
                workloads: opts.workloads.iter().map(|w| w.name()).collect(),
                other_proxy: opts.other.as_ref().map(|o| o.binary.display().to_string()),
                other_proxy_name: opts.other.as_ref().map(|o| o.name.clone()),
                idle_conns: opts.memory.then_some(opts.idle_conns),
                beside_bulk: opts.beside,
            },
            rows: Vec::new(),
            memory: Vec::new(),
            targets: Targets::default(),
        }
    }

    /// Once every row and memory figure is in: zring's ratios to the other proxy, then the
    /// targets.
    pub fn finish(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.wall_secs = now.saturating_sub(self.started_unix) as f64;
        if let Some(peer) = self.settings.other_proxy_name.clone() {
            let peers: Vec<Row> = self
                .rows
                .iter()
                .filter(|r| r.proxy == peer)
                .cloned()
                .collect();
            for row in self.rows.iter_mut().filter(|r| r.proxy == "zring") {
                if let Some(p) = peers.iter().find(|p| p.same_point(row)) {
                    row.compare_peer(p);
                }
            }
            let theirs: Vec<Memory> = self
                .memory
                .iter()
                .filter(|m| m.proxy == peer)
                .cloned()
                .collect();
            for m in self.memory.iter_mut().filter(|m| m.proxy == "zring") {
                if let Some(p) = theirs.iter().find(|p| p.cores == m.cores) {
                    m.compare_peer(p);
                }
            }
        }
        self.targets = Targets::check(self);
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
        let cores: Vec<String> = s.cores.iter().map(usize::to_string).collect();
        let _ = writeln!(
            t,
            "zring data path: {} s per measurement, median of {} round(s) (setups in alternating order), \
             {} runtime(s) per zring (rows `Nc`), {} CPUs, kernel {}; the run took {:.1} min",
            s.secs_per_measurement,
            s.rounds,
            cores.join(" and "),
            self.host.cpus,
            self.host.kernel,
            self.wall_secs / 60.0
        );
        if s.beside_bulk > 0 {
            let _ = writeln!(
                t,
                "{} bulk connection(s) ran beside every measurement (ZRING_BENCH_BESIDE), their \
                 bytes not counted: CPU per operation includes them, latency shows what they cost",
                s.beside_bulk
            );
        }
        let peer = s.other_proxy_name.as_deref().unwrap_or("the other proxy");
        let _ = writeln!(
            t,
            "(×) is the ratio to direct for the same workload and connections; [×] is zring's figure\n\
             over {peer}'s for the same mode, workload, connections and cores; all measured in this run.\n\
             CPU per operation of each proxy process (out = client's node, in = server's node): s/GiB\n\
             for bulk, s per 1000 requests for rr, s per 1000 new connections for crr; total adds the\n\
             pods' own CPU and the kernel's softirq threads (ksoftirqd), and its (×) compares with\n\
             direct's pods and softirq threads alone. `Nc`: N runtimes per zring,\n\
             N worker threads per {peer}."
        );
        for w in Workload::ALL {
            for &c in &s.conns {
                let rows: Vec<&Row> = self.group(w.name(), c).collect();
                if rows.is_empty() {
                    continue;
                }
                let _ = writeln!(t, "\n{} × {c} connection(s)", w.title());
                let head = match w {
                    Workload::Bulk => format!("{:<SETUP$} {}", "setup", heading("Gb/s", FIG)),
                    _ => format!(
                        "{:<SETUP$} {} {} {} {}",
                        "setup",
                        heading("req/s", FIG),
                        heading("p50 µs", PFIG),
                        heading("p99 µs", PFIG),
                        heading("p999 µs", PFIG)
                    ),
                };
                let unit = cpu_unit(w);
                let _ = writeln!(
                    t,
                    "{head} {} {} {} {:>6} {:>8} {:>4}",
                    heading(&format!("CPU out {unit}"), PFIG),
                    heading(&format!("CPU in {unit}"), PFIG),
                    heading(&format!("CPU total {unit}"), FIG),
                    "errors",
                    "SYN rtx",
                    "RTO"
                );
                for r in rows {
                    let v = &r.vs_direct;
                    let p = r.vs_peer.clone().unwrap_or_default();
                    let figures = match w {
                        Workload::Bulk => cell(r.gbps, v.gbps, p.throughput, 2),
                        _ => {
                            let l = r.latency_us;
                            format!(
                                "{} {} {} {}",
                                cell(r.rps, v.rps, p.throughput, 0),
                                peer_cell(l.map(|l| l.p50), p.p50, 0),
                                peer_cell(l.map(|l| l.p99), p.p99, 0),
                                peer_cell(l.map(|l| l.p999), p.p999, 0)
                            )
                        }
                    };
                    let cpu = &r.cpu_per_op;
                    let _ = writeln!(
                        t,
                        "{:<SETUP$} {figures} {} {} {} {:>6} {:>8} {:>4}",
                        r.setup,
                        peer_cell(cpu.outbound, p.cpu_outbound, 3),
                        peer_cell(cpu.inbound, p.cpu_inbound, 3),
                        cell(Some(cpu.total), v.cpu_total, p.cpu_total, 3),
                        r.errors,
                        r.syn_retransmits,
                        r.retransmit_timeouts
                    );
                }
            }
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                t,
                "\nIdle HBONE connections: resident memory of each proxy (KiB) before, with the \
                 connections open and after they closed, twice over; bytes per connection [zring / {peer}]"
            );
            let _ = writeln!(
                t,
                "{:<SETUP$} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>PFIG$}",
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
                        "{:<SETUP$} {:>7} {:>9} {:>9}",
                        m.setup, m.connections, side.role, side.baseline.rss_kib
                    );
                    for r in &side.rounds {
                        let _ = write!(line, " {:>9} {:>9}", r.open.rss_kib, r.closed.rss_kib);
                    }
                    let per = peer_cell(Some(side.bytes_per_conn), side.vs_peer, 0);
                    let _ = writeln!(t, "{line} {per}");
                }
            }
        }
        t.push('\n');
        t.push_str(&self.targets.table());
        t
    }
}

/// Width of the setup column (`ztunnel plaintext 2c`, `zring plaintext legacy 64c`).
const SETUP: usize = 26;
/// Width of a figure with both ratios, and with the peer's only.
const FIG: usize = 26;
const PFIG: usize = 18;

/// A column heading over a cell `width` wide, right-aligned with the cell's value (the first
/// nine characters) rather than with its ratios; longer headings take the whole width.
fn heading(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= 9 {
        format!("{text:>9}{:w$}", "", w = width - 9)
    } else {
        format!("{text:<width$}")
    }
}

/// `value (ratio to direct×) [ratio to peer×]`, [`FIG`] wide; `-` where there is nothing.
fn cell(value: Option<f64>, direct: Option<f64>, peer: Option<f64>, decimals: usize) -> String {
    match value {
        None => format!("{:>FIG$}", "-"),
        Some(v) => {
            let d = direct.map_or(String::new(), |r| format!("({r:.2}×)"));
            format!("{v:>9.decimals$} {d:>7} {:>8}", bracket(peer))
        }
    }
}

/// `value [ratio to peer×]`, [`PFIG`] wide.
fn peer_cell(value: Option<f64>, peer: Option<f64>, decimals: usize) -> String {
    match value {
        None => format!("{:>PFIG$}", "-"),
        Some(v) => format!("{v:>9.decimals$} {:>8}", bracket(peer)),
    }
}

fn bracket(r: Option<f64>) -> String {
    r.map_or(String::new(), |r| format!("[{r:.2}×]"))
}
