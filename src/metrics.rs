//! Metrics: per-core shards written without locks, merged on scrape by the control thread.
//!
//! Threads and ownership:
//! - each core owns a [`Shard`] (`Rc`, `!Send`): its Istio TCP series, latency histograms and
//!   gauges. A core writes only its own cells, each with a relaxed load and store (single
//!   writer), so the data path takes no lock and touches no contended atomic;
//! - the [`Registry`] (`Arc`, shared) holds the receiving ends: new series arrive from the
//!   cores once per label set through a lock-free channel, latency batches every
//!   [`shard::FLUSH_INTERVAL`] through a bounded one ([`LATENCY_QUEUE`]; when it is full a core
//!   keeps its observations until there is room); xDS counters and build facts live here;
//! - the metrics server (control thread) calls [`Registry::scrape`], which drains those
//!   channels under the registry's own mutex (never taken by a core), sums every series over
//!   the cores by label set, merges the histograms, and renders the Prometheus text format.
//!
//! Connection accounting, for each connection a core accepts (see `proxy::ConnRecord`):
//! `istio_tcp_connections_opened_total` once, under the label set with `response_flags="-"`,
//! when the upstream is connected (or when the connection ends, if it never got that far);
//! bytes under that same set as they are written; `istio_tcp_connections_closed_total` once at
//! the end under the set with the outcome's flag, and `istio_tcp_connections_failed_total` too
//! when the outcome was an error. So once no connection is open, opened = closed, summed over
//! flags.
//!
//! Modules: `labels` (the label set, pure), `shard` (per core), `latency` (hdrhistogram),
//! `text` (the exposition format, pure), `xds` (control-plane counters), `capture` (the
//! enrolled-pod set keeper's counters).

pub mod capture;
pub mod dns;
pub mod hbone;
pub mod labels;
pub mod latency;
pub mod shard;
pub mod text;
pub mod xds;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::{Receiver, Sender};

pub use capture::{CaptureDamage, CaptureSetMetrics};
pub use labels::{Conn, LabelSet, LabelsRef, Reporter, SecurityPolicy};
pub use latency::{Kind as LatencyKind, Latency};
pub use shard::{
    CoreGauges, Flow, Meter, Refusal, Series, Shard, TrafficCell, WorkloadWait, flush_loop,
};
pub use xds::{Termination, XdsMetrics};

use shard::{LatencyBatch, NewSeries};
pub use text::{Encoder, Type};

/// Latency batches waiting for a scrape, at most; beyond, cores keep accumulating locally.
pub const LATENCY_QUEUE: usize = 256;

/// The version the build-info metrics and `/config_dump` report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Facts about this build.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_revision: &'static str,
    pub rust_version: &'static str,
    pub build_profile: &'static str,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: VERSION,
            git_revision: option_env!("ZRING_GIT_REVISION").unwrap_or("unknown"),
            rust_version: env!("ZRING_BUILD_RUSTC"),
            build_profile: env!("ZRING_BUILD_PROFILE"),
        }
    }
}

/// Everything a scrape reads. One per process, shared by the cores (to attach their shards)
/// and the metrics server.
#[derive(Debug)]
pub struct Registry {
    series_tx: Sender<NewSeries>,
    series_rx: Receiver<NewSeries>,
    latency_tx: Sender<LatencyBatch>,
    latency_rx: Receiver<LatencyBatch>,
    /// Taken by scrapes and by cores attaching at start-up; never on the data path.
    merged: Mutex<Merged>,
    xds: Arc<XdsMetrics>,
    /// Updates of node capture's enrolled-pod set.
    capture_set: Arc<CaptureSetMetrics>,
    /// Log lines the non-blocking writer dropped because its queue was full.
    dropped_logs: OnceLock<tracing_appender::non_blocking::ErrorCounter>,
    /// In-pod mode's workload-manager series (`workload_manager_*`), when that mode runs.
    inpod: OnceLock<Arc<dyn Collect>>,
    /// The DNS proxy's series (`istio_dns_*`, `zring_dns_*`).
    dns: Arc<dns::DnsMetrics>,
    /// Other families written on every scrape ([`Registry::watch`]: admin, health).
    others: Mutex<Vec<Arc<dyn Collect>>>,
}

/// Families kept elsewhere (in atomics of their own thread) and written on every scrape.
pub trait Collect: Send + Sync + std::fmt::Debug {
    fn collect(&self, e: &mut Encoder);
}

#[derive(Debug, Default)]
struct Merged {
    /// Every series any core created, with the core's cell.
    series: Vec<NewSeries>,
    latencies: [Latency; 4],
    cores: Vec<Arc<CoreGauges>>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

/// The five counters of one label set, summed over cores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub received: u64,
    pub sent: u64,
}

impl Registry {
    pub fn new() -> Registry {
        let (series_tx, series_rx) = crossbeam_channel::unbounded();
        let (latency_tx, latency_rx) = crossbeam_channel::bounded(LATENCY_QUEUE);
        Registry {
            series_tx,
            series_rx,
            latency_tx,
            latency_rx,
            merged: Mutex::default(),
            xds: Arc::default(),
            capture_set: Arc::default(),
            dropped_logs: OnceLock::new(),
            inpod: OnceLock::new(),
            dns: Arc::default(),
            others: Mutex::default(),
        }
    }

    /// A shard for core `core` running `driver`. Called once by each core at start-up.
    pub fn attach_core(&self, core: usize, driver: &'static str) -> Shard {
        let gauges = Arc::new(CoreGauges {
            core,
            driver,
            connections: Default::default(),
            refused: Default::default(),
            workload_waits: Default::default(),
            policy_rechecks: Default::default(),
            hbone: Default::default(),
        });
        self.lock().cores.push(gauges.clone());
        Shard::new(gauges, self.series_tx.clone(), self.latency_tx.clone())
    }

    pub fn xds(&self) -> &Arc<XdsMetrics> {
        &self.xds
    }

    /// The DNS proxy's series; each core attaches a shard.
    pub fn dns(&self) -> &Arc<dns::DnsMetrics> {
        &self.dns
    }

    pub fn capture_set(&self) -> &Arc<CaptureSetMetrics> {
        &self.capture_set
    }

    /// Reports the log writer's dropped lines from now on.
    pub fn watch_dropped_logs(&self, counter: tracing_appender::non_blocking::ErrorCounter) {
        let _ = self.dropped_logs.set(counter);
    }

    /// Reports in-pod mode's workload-manager series from now on.
    pub fn watch_inpod(&self, series: Arc<dyn Collect>) {
        let _ = self.inpod.set(series);
    }

    /// Writes `series`' families on every scrape from now on.
    pub fn watch(&self, series: Arc<dyn Collect>) {
        self.others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(series);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Merged> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.merged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drain(&self, merged: &mut Merged) {
        merged.series.extend(self.series_rx.try_iter());
        for (kind, batch) in self.latency_rx.try_iter() {
            merged.latencies[kind.index()].add(&batch);
        }
    }

    /// The TCP counters summed over cores, by label set.
    pub fn traffic(&self) -> BTreeMap<LabelSet, Totals> {
        let mut merged = self.lock();
        self.drain(&mut merged);
        let mut out: BTreeMap<LabelSet, Totals> = BTreeMap::new();
        for (labels, cell) in &merged.series {
            let t = out.entry(LabelSet::clone(labels)).or_default();
            t.opened += cell.opened.load(Ordering::Relaxed);
            t.closed += cell.closed.load(Ordering::Relaxed);
            t.failed += cell.failed.load(Ordering::Relaxed);
            t.received += cell.received.load(Ordering::Relaxed);
            t.sent += cell.sent.load(Ordering::Relaxed);
        }
        out
    }

    /// The merged latency histogram of `kind`.
    pub fn latency(&self, kind: LatencyKind) -> Latency {
        let mut merged = self.lock();
        self.drain(&mut merged);
        merged.latencies[kind.index()].clone()
    }

    /// Everything, in the Prometheus text format.
    pub fn scrape(&self) -> String {
        let traffic = self.traffic();
        let mut e = Encoder::new();
        let build = BuildInfo::current();
        e.family(
            "istio_build",
            Type::Gauge,
            "Build of this mesh node proxy: 1 for the running version",
        );
        e.sample(
            "istio_build",
            [("component", "ztunnel"), ("tag", build.version)],
            1,
        );
        e.family(
            "zring_build_info",
            Type::Gauge,
            "Build of this zring process: always 1, facts in the labels",
        );
        e.sample(
            "zring_build_info",
            [
                ("version", build.version),
                ("git_revision", build.git_revision),
                ("rust_version", build.rust_version),
            ],
            1,
        );
        write_traffic(&mut e, &traffic);
        self.write_latencies(&mut e);
        self.write_xds(&mut e);
        self.write_capture_set(&mut e);
        self.write_cores(&mut e);
        if let Some(inpod) = self.inpod.get() {
            inpod.collect(&mut e);
        }
        self.dns.collect(&mut e);
        let others = self
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for series in others {
            series.collect(&mut e);
        }
        write_process(&mut e);
        if let Some(c) = self.dropped_logs.get() {
            e.family(
                "zring_log_lines_dropped_total",
                Type::Counter,
                "Log lines dropped because the log writer could not keep up (cores never wait for it)",
            );
            e.sample("zring_log_lines_dropped_total", [], c.dropped_lines());
        }
        e.finish()
    }

    fn write_latencies(&self, e: &mut Encoder) {
        let merged = {
            let mut m = self.lock();
            self.drain(&mut m);
            m.latencies.clone()
        };
        let families = [
            (
                "zring_connection_setup_duration_seconds",
                "Time from accepting a connection to having its upstream connected",
                "direction",
                [
                    (LatencyKind::SetupOutbound, "outbound"),
                    (LatencyKind::SetupInbound, "inbound"),
                ],
            ),
            (
                "zring_hbone_handshake_duration_seconds",
                "Time to establish an HBONE connection (client: TCP, TLS and HTTP/2; server: TLS)",
                "role",
                [
                    (LatencyKind::HandshakeClient, "client"),
                    (LatencyKind::HandshakeServer, "server"),
                ],
            ),
        ];
        for (name, help, label, kinds) in families {
            if kinds.iter().all(|(k, _)| merged[k.index()].is_empty()) {
                continue;
            }
            e.family(name, Type::Histogram, help);
            let bucket = format!("{name}_bucket");
            for (kind, value) in kinds {
                let l = &merged[kind.index()];
                if l.is_empty() {
                    continue;
                }
                for (le, n) in l.cumulative() {
                    e.sample(&bucket, [(label, value), ("le", le)], n);
                }
                e.sample(&bucket, [(label, value), ("le", "+Inf")], l.count());
                e.sample(&format!("{name}_sum"), [(label, value)], l.sum_seconds());
                e.sample(&format!("{name}_count"), [(label, value)], l.count());
            }
        }
    }

    fn write_capture_set(&self, e: &mut Encoder) {
        let (ok, error) = self.capture_set.updates();
        e.family(
            "zring_capture_set_updates_total",
            Type::Counter,
            "Updates of node capture's enrolled-pod set (nft transactions), by result",
        );
        for (result, n) in [("ok", ok), ("error", error)] {
            e.sample("zring_capture_set_updates_total", [("result", result)], n);
        }
        capture::write_watch(&self.capture_set, e);
    }

    fn write_xds(&self, e: &mut Encoder) {
        let x = &self.xds;
        e.family(
            "istio_xds_connection_terminations_total",
            Type::Counter,
            "xDS streams to istiod that ended, by reason",
        );
        for why in Termination::ALL {
            e.sample(
                "istio_xds_connection_terminations_total",
                [("reason", why.as_str())],
                x.terminations(why),
            );
        }
        e.family(
            "zring_xds_responses_total",
            Type::Counter,
            "xDS responses handled, by type and whether they were acknowledged or rejected",
        );
        for kind in crate::xds_types::Kind::ALL {
            let (ack, nack) = x.responses(kind);
            for (result, n) in [("ack", ack), ("nack", nack)] {
                e.sample(
                    "zring_xds_responses_total",
                    [("type_url", kind.type_url()), ("result", result)],
                    n,
                );
            }
        }
        e.family(
            "zring_xds_rejected_resources_total",
            Type::Counter,
            "xDS resources rejected (each named in a NACK), by type",
        );
        for kind in crate::xds_types::Kind::ALL {
            e.sample(
                "zring_xds_rejected_resources_total",
                [("type_url", kind.type_url())],
                x.rejected(kind),
            );
        }
    }

    fn write_cores(&self, e: &mut Encoder) {
        let mut cores = self.lock().cores.clone();
        cores.sort_by_key(|c| c.core);
        if cores.is_empty() {
            return;
        }
        e.family(
            "zring_core_info",
            Type::Gauge,
            "One per-core runtime: always 1, its I/O driver in the labels",
        );
        let ids: Vec<String> = cores.iter().map(|c| c.core.to_string()).collect();
        for (c, id) in cores.iter().zip(&ids) {
            e.sample(
                "zring_core_info",
                [("core", id.as_str()), ("driver", c.driver)],
                1,
            );
        }
        e.family(
            "zring_hbone_connections_refused_total",
            Type::Counter,
            "HBONE connections (15008) refused before carrying a stream, by reason",
        );
        for why in Refusal::ALL {
            let n: u64 = cores.iter().map(|c| c.refused(why)).sum();
            e.sample(
                "zring_hbone_connections_refused_total",
                [("reason", why.as_str())],
                n,
            );
        }
        hbone::write(&cores, e);
        e.family(
            "zring_workload_waits_total",
            Type::Counter,
            "Connections that waited for a workload the configuration did not have yet (outbound: \
             its source; inbound: its destination), by whether it arrived within the bound",
        );
        // Only the combinations that happened: most nodes never wait.
        for wait in WorkloadWait::ALL {
            let n: u64 = cores.iter().map(|c| c.workload_waits(wait)).sum();
            if n == 0 {
                continue;
            }
            e.sample(
                "zring_workload_waits_total",
                [("direction", wait.direction()), ("result", wait.result())],
                n,
            );
        }
        e.family(
            "zring_policy_rechecks_total",
            Type::Counter,
            "Re-checks of open connections after a configuration change, one per change and core",
        );
        let recheck = |i: usize| -> u64 {
            cores
                .iter()
                .map(|c| c.policy_rechecks[i].load(Ordering::Relaxed))
                .sum()
        };
        e.sample("zring_policy_rechecks_total", [], recheck(0));
        e.family(
            "zring_policy_recheck_connections_total",
            Type::Counter,
            "Open connections a configuration change re-decided (visited: only those the change \
             can affect) and closed (now denied)",
        );
        for (i, result) in [(1, "visited"), (2, "closed")] {
            e.sample(
                "zring_policy_recheck_connections_total",
                [("result", result)],
                recheck(i),
            );
        }
        e.family(
            "zring_core_connections_open",
            Type::Gauge,
            "Connections a core is handling now (accepted and not yet finished)",
        );
        for (c, id) in cores.iter().zip(&ids) {
            e.sample(
                "zring_core_connections_open",
                [("core", id.as_str())],
                c.connections.load(Ordering::Relaxed),
            );
        }
    }
}

/// The process's resources: the usual `process_*` gauges, and the allocator's live bytes,
/// which unlike resident memory move only when something is held (see `sys::alloc`).
fn write_process(e: &mut Encoder) {
    if let Ok(rss) = crate::sys::resident_bytes() {
        e.family(
            "process_resident_memory_bytes",
            Type::Gauge,
            "Resident memory size in bytes",
        );
        e.sample("process_resident_memory_bytes", [], rss);
    }
    if let Ok(fds) = crate::sys::open_fds() {
        e.family(
            "process_open_fds",
            Type::Gauge,
            "Number of open file descriptors",
        );
        e.sample("process_open_fds", [], fds as u64);
    }
    if let Ok(cpu) = crate::sys::process_cpu_time(std::process::id()) {
        e.family(
            "process_cpu_seconds_total",
            Type::Counter,
            "Total user and system CPU time spent in seconds",
        );
        e.sample("process_cpu_seconds_total", [], cpu.as_secs_f64());
    }
    if let Some(live) = crate::sys::alloc::live_bytes() {
        e.family(
            "zring_heap_live_bytes",
            Type::Gauge,
            "Bytes allocated on the heap and not yet freed (RSS also counts the allocator's free pages)",
        );
        e.sample("zring_heap_live_bytes", [], live);
    }
}

/// The five `istio_tcp_*` families. Opened and byte counts exist only under
/// `response_flags="-"` (a connection is opened, and moves bytes, before it has an outcome);
/// closed and failed under every flag a connection ended with.
fn write_traffic(e: &mut Encoder, traffic: &BTreeMap<LabelSet, Totals>) {
    if traffic.is_empty() {
        return;
    }
    let unflagged = || {
        traffic
            .iter()
            .filter(|(l, _)| l.response_flags() == labels::NO_FLAGS)
    };
    /// Name, help, whether only `response_flags="-"` series have it, and its value.
    type Family = (&'static str, &'static str, bool, fn(&Totals) -> u64);
    let families: [Family; 5] = [
        (
            "istio_tcp_connections_opened_total",
            "TCP connections opened",
            true,
            |t| t.opened,
        ),
        (
            "istio_tcp_connections_closed_total",
            "TCP connections closed, by the outcome's response flags",
            false,
            |t| t.closed,
        ),
        (
            "istio_tcp_connections_failed_total",
            "TCP connections that ended with an error, by its response flags",
            false,
            |t| t.failed,
        ),
        (
            "istio_tcp_received_bytes_total",
            "Bytes received from the client during a TCP connection (client to server), counted as they flow",
            true,
            |t| t.received,
        ),
        (
            "istio_tcp_sent_bytes_total",
            "Bytes sent to the client during a TCP connection (server to client), counted as they flow",
            true,
            |t| t.sent,
        ),
    ];
    for (name, help, only_unflagged, value) in families {
        if only_unflagged && unflagged().next().is_none() {
            continue;
        }
        e.family(name, Type::Counter, help);
        for (set, totals) in traffic {
            if !only_unflagged || set.response_flags() == labels::NO_FLAGS {
                e.sample(name, set.pairs(), value(totals));
            }
        }
    }
}

#[cfg(test)]
mod tests;
