//! One core's metrics: its series of Istio TCP counters, its latency histograms and its gauges.
//!
//! Runs on its core only (`Rc`, `RefCell`, `Cell`: `!Send`). Every counter cell it creates is
//! written by this core alone — the single-writer rule — with a relaxed load and store (no
//! read-modify-write, no contended cache line); the metrics server on the control thread only
//! reads it. New label sets reach the server once, through a lock-free channel, when the core
//! first meets them; a connection resolves its label set once and then keeps an `Rc` to its
//! series, so counting a byte is two plain adds and a store.
//!
//! Latencies are recorded into per-core hdrhistograms and handed to the server every
//! [`FLUSH_INTERVAL`] by [`flush_loop`], which the core runs as a task.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::RandomState;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::labels::{LabelSet, LabelsRef};
use super::latency::{Kind, Latency};

/// How often a core hands its latency observations to the metrics server: a scrape sees a
/// histogram at most this old (counters are always current).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Adds `n` to a counter only this core writes. A load and a store, not a `fetch_add`: no
/// other thread ever writes the cell, so no update can be lost, and readers see each store
/// whole.
#[inline]
pub(super) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The five Istio TCP counters of one label set on one core.
#[derive(Debug, Default)]
pub struct TrafficCell {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub failed: AtomicU64,
    /// Bytes from the client toward the server (Istio's "received during request").
    pub received: AtomicU64,
    /// Bytes from the server back to the client.
    pub sent: AtomicU64,
}

/// A label set and its counters on this core.
#[derive(Debug)]
pub struct Series {
    labels: Arc<LabelSet>,
    cell: Arc<TrafficCell>,
}

impl Series {
    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn cell(&self) -> &TrafficCell {
        &self.cell
    }

    /// Counts a connection opened under this label set.
    pub fn open(&self) {
        bump(&self.cell.opened, 1);
    }

    /// Counts a connection closed under this label set; `failed` when it ended with an error.
    pub fn close(&self, failed: bool) {
        bump(&self.cell.closed, 1);
        if failed {
            bump(&self.cell.failed, 1);
        }
    }
}

/// Which direction of a connection a [`Meter`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Client → server: `istio_tcp_received_bytes_total`.
    Request,
    /// Server → client: `istio_tcp_sent_bytes_total`.
    Response,
}

/// One direction's byte counter of one series, held by a connection while it copies.
#[derive(Debug, Clone)]
pub struct Meter {
    series: Rc<Series>,
    flow: Flow,
}

impl Meter {
    pub fn new(series: Rc<Series>, flow: Flow) -> Meter {
        Meter { series, flow }
    }

    #[inline]
    pub fn add(&self, n: u64) {
        let cell = &self.series.cell;
        match self.flow {
            Flow::Request => bump(&cell.received, n),
            Flow::Response => bump(&cell.sent, n),
        }
    }
}

/// Gauges of one core, written by it, read by the metrics server.
#[derive(Debug)]
pub struct CoreGauges {
    pub core: usize,
    pub driver: &'static str,
    /// Connections with a live record on this core (accepted and not yet finished).
    pub connections: AtomicU64,
    /// HBONE connections (15008) this core refused before any stream, by [`Refusal`].
    pub refused: [AtomicU64; Refusal::ALL.len()],
    /// Connections that waited for a workload the snapshot did not have yet, by
    /// [`WorkloadWait`].
    pub workload_waits: [AtomicU64; WorkloadWait::ALL.len()],
    /// Policy re-checks of open connections (`core::conns`): passes (one per snapshot change
    /// the core re-checked), connections re-decided, connections closed.
    pub policy_rechecks: [AtomicU64; 3],
    /// The HBONE server's limit figures (`zring_hbone_*`).
    pub hbone: super::hbone::HboneGauges,
}

/// A connection that waited (bounded) for a workload newer than the snapshot: its source
/// (outbound) or its destination (inbound), and whether it arrived in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadWait {
    pub inbound: bool,
    pub found: bool,
}

impl WorkloadWait {
    pub const ALL: [WorkloadWait; 4] = [
        WorkloadWait {
            inbound: false,
            found: true,
        },
        WorkloadWait {
            inbound: false,
            found: false,
        },
        WorkloadWait {
            inbound: true,
            found: true,
        },
        WorkloadWait {
            inbound: true,
            found: false,
        },
    ];

    pub fn direction(self) -> &'static str {
        if self.inbound { "inbound" } else { "outbound" }
    }

    pub fn result(self) -> &'static str {
        if self.found { "found" } else { "timeout" }
    }

    fn index(self) -> usize {
        usize::from(self.inbound) * 2 + usize::from(!self.found)
    }
}

/// Why an HBONE connection was refused before it carried a stream (no access-log record
/// exists for it, so this is where it is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The original destination is no workload on this node.
    NoLocalWorkload,
    /// No certificate for the destination's identity (yet), or no config could be built.
    NoCertificate,
    /// The TLS handshake failed or timed out (untrusted CA, foreign trust domain, no client
    /// certificate, garbage).
    TlsHandshake,
    /// HTTP/2 ended the connection for a protocol violation or abuse (GOAWAY).
    Http2,
    /// The TLS handshake did not finish within `ZRING_HBONE_TLS_TIMEOUT`.
    TlsTimeout,
    /// No HTTP/2 preface and first SETTINGS within `ZRING_HBONE_PREFACE_TIMEOUT`.
    PrefaceTimeout,
    /// The peer address held `ZRING_HBONE_MAX_CONNECTIONS_PER_PEER` connections (reset).
    PeerLimit,
    /// The core held its share of `ZRING_HBONE_MAX_CONNECTIONS` (reset).
    ConnectionLimit,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::NoLocalWorkload,
        Refusal::NoCertificate,
        Refusal::TlsHandshake,
        Refusal::Http2,
        Refusal::TlsTimeout,
        Refusal::PrefaceTimeout,
        Refusal::PeerLimit,
        Refusal::ConnectionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoLocalWorkload => "no_local_workload",
            Refusal::NoCertificate => "no_certificate",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::Http2 => "http2",
            Refusal::TlsTimeout => "tls_timeout",
            Refusal::PrefaceTimeout => "preface_timeout",
            Refusal::PeerLimit => "peer_limit",
            Refusal::ConnectionLimit => "connection_limit",
        }
    }

    fn index(self) -> usize {
        match self {
            Refusal::NoLocalWorkload => 0,
            Refusal::NoCertificate => 1,
            Refusal::TlsHandshake => 2,
            Refusal::Http2 => 3,
            Refusal::TlsTimeout => 4,
            Refusal::PrefaceTimeout => 5,
            Refusal::PeerLimit => 6,
            Refusal::ConnectionLimit => 7,
        }
    }
}

impl CoreGauges {
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why.index()].load(Ordering::Relaxed)
    }

    pub fn workload_waits(&self, wait: WorkloadWait) -> u64 {
        self.workload_waits[wait.index()].load(Ordering::Relaxed)
    }
}

/// A new series, on its way to the metrics server.
pub(super) type NewSeries = (Arc<LabelSet>, Arc<TrafficCell>);
/// Latencies recorded since the last flush, on their way to the metrics server.
pub(super) type LatencyBatch = (Kind, Latency);

/// One core's metrics. Create with [`super::Registry::attach_core`].
#[derive(Debug)]
pub struct Shard {
    /// Series by the hash of their label set (collisions share a bucket).
    series: RefCell<HashMap<u64, Vec<Rc<Series>>>>,
    hasher: RandomState,
    new_series: Sender<NewSeries>,
    gauges: Arc<CoreGauges>,
    latencies: RefCell<[Latency; 4]>,
    flushes: Sender<LatencyBatch>,
}

impl Shard {
    pub(super) fn new(
        gauges: Arc<CoreGauges>,
        new_series: Sender<NewSeries>,
        flushes: Sender<LatencyBatch>,
    ) -> Shard {
        Shard {
            series: RefCell::default(),
            hasher: RandomState::new(),
            new_series,
            gauges,
            latencies: RefCell::new(std::array::from_fn(|_| Latency::new())),
            flushes,
        }
    }

    pub fn core(&self) -> usize {
        self.gauges.core
    }

    /// The series of `labels` on this core, created (and announced to the server) the first
    /// time. Allocates only then.
    pub fn series(&self, labels: &LabelsRef<'_>) -> Rc<Series> {
        let hash = labels.hash_with(&self.hasher);
        let mut map = self.series.borrow_mut();
        let bucket = map.entry(hash).or_default();
        if let Some(s) = bucket.iter().find(|s| s.labels.matches(labels)) {
            return s.clone();
        }
        let series = Rc::new(Series {
            labels: Arc::new(labels.to_owned_set()),
            cell: Arc::default(),
        });
        debug_assert_eq!(series.labels.hash_with(&self.hasher), hash);
        // The server holds the receiving end for the life of the process; if it is gone the
        // process is exiting and nobody will scrape again.
        let _ = self
            .new_series
            .send((series.labels.clone(), series.cell.clone()));
        bucket.push(series.clone());
        series
    }

    /// How many distinct label sets this core has met.
    pub fn series_count(&self) -> usize {
        self.series.borrow().values().map(Vec::len).sum()
    }

    pub fn connection_started(&self) {
        bump(&self.gauges.connections, 1);
    }

    /// Counts an HBONE connection refused before any stream.
    pub fn hbone_refused(&self, why: Refusal) {
        bump(&self.gauges.refused[why.index()], 1);
    }

    /// Counts one policy re-check pass: the connections it re-decided and those it closed.
    pub fn policy_rechecked(&self, visited: usize, closed: usize) {
        let [passes, v, c] = &self.gauges.policy_rechecks;
        bump(passes, 1);
        bump(v, visited as u64);
        bump(c, closed as u64);
    }

    /// Counts a connection that waited for a workload newer than the snapshot.
    pub fn workload_waited(&self, wait: WorkloadWait) {
        bump(&self.gauges.workload_waits[wait.index()], 1);
    }

    /// The HBONE server's limit figures, written by this core only.
    pub fn hbone(&self) -> &super::hbone::HboneGauges {
        &self.gauges.hbone
    }

    pub fn connection_ended(&self) {
        bump(&self.gauges.connections, u64::MAX); // wrapping − 1
    }

    pub fn observe(&self, kind: Kind, d: Duration) {
        self.latencies.borrow_mut()[kind.index()].record(d);
    }

    /// Hands every non-empty histogram to the server. Returns how many were sent. When the
    /// server's queue is full (nobody has scraped for a while) the core keeps accumulating
    /// into its own histogram instead: nothing is lost and memory stays bounded.
    pub fn flush(&self) -> usize {
        let mut sent = 0;
        let mut latencies = self.latencies.borrow_mut();
        for kind in Kind::ALL {
            let l = &mut latencies[kind.index()];
            if l.is_empty() {
                continue;
            }
            match self.flushes.try_send((kind, l.take())) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full((_, batch)) | TrySendError::Disconnected((_, batch))) => {
                    *l = batch;
                }
            }
        }
        sent
    }
}

/// Flushes `shard`'s latencies every [`FLUSH_INTERVAL`], forever. A core spawns it once.
pub async fn flush_loop(shard: Rc<Shard>) {
    loop {
        monoio::time::sleep(FLUSH_INTERVAL).await;
        shard.flush();
    }
}
