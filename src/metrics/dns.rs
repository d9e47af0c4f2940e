//! The DNS proxy's series: ztunnel's `istio_dns_*` families (its `src/dns/metrics.rs`:
//! `istio_dns_requests_total`, `istio_dns_upstream_requests_total`,
//! `istio_dns_upstream_failures_total` and the `istio_dns_upstream_request_duration_seconds`
//! histogram, labelled `request_query_type`, `request_protocol`, `source_canonical_service`,
//! `source_canonical_revision`) and zring's own counters of what it refused
//! (`zring_dns_rejected_total{reason}`, `zring_dns_error_answers_total{rcode}`,
//! `zring_dns_upstream_discarded_total`).
//!
//! Same shape as the TCP series: each core owns a [`DnsShard`] (`Rc`) whose cells only that
//! core writes (relaxed load + store); a new label set is sent once to the shared
//! [`DnsMetrics`] through a lock-free channel; a scrape (control thread) drains it under the
//! metrics' own mutex and sums the cells by label set.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::text::{Encoder, Type};

/// Upper bounds of `istio_dns_upstream_request_duration_seconds` (ztunnel's), in seconds.
pub const DURATION_BUCKETS: [f64; 6] = [0.0005, 0.001, 0.01, 0.1, 1.0, 5.0];

/// The label values of one DNS series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsLabels {
    /// Lowercase type name (`a`, `aaaa`, `srv`, …), `unknown` for the rest.
    pub query_type: &'static str,
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    pub source_canonical_service: Arc<str>,
    pub source_canonical_revision: Arc<str>,
}

/// One label set's counters; written by one core only.
#[derive(Debug, Default)]
pub struct DnsCell {
    requests: AtomicU64,
    upstream_requests: AtomicU64,
    upstream_failures: AtomicU64,
    /// Non-cumulative bucket counts; the last slot is above the largest bound.
    duration: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_ns: AtomicU64,
}

/// Why a message was not served (dropped, or answered FORMERR/NOTIMP by the proxy itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Unreadable: the wire error's reason (`wire::WireError::reason`).
    Malformed(&'static str),
    /// A response (QR set) sent to the proxy: answering it would let two resolvers loop.
    Response,
    /// Fewer than 12 bytes.
    Runt,
    /// The core's forwarding queue is full (a flood): the client retries.
    Overload,
    /// A TCP client sent a length prefix of zero or went silent mid-message.
    TcpFraming,
    /// The client is over its queries per second on this core (`dns::limit`).
    RateLimited,
    /// The client holds its share of the core's forwards already (`dns::limit`).
    ClientInflight,
}

impl Dropped {
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Malformed(r) => r,
            Dropped::Response => "response",
            Dropped::Runt => "runt",
            Dropped::Overload => "overload",
            Dropped::TcpFraming => "tcp_framing",
            Dropped::RateLimited => "rate_limited",
            Dropped::ClientInflight => "client_inflight",
        }
    }
}

/// Shared between the cores and the scrape.
#[derive(Debug)]
pub struct DnsMetrics {
    new_tx: Sender<(DnsLabels, Arc<DnsCell>)>,
    new_rx: Receiver<(DnsLabels, Arc<DnsCell>)>,
    /// Taken by scrapes and by cores attaching; never on the data path.
    merged: Mutex<Merged>,
}

#[derive(Debug, Default)]
struct Merged {
    series: Vec<(DnsLabels, Arc<DnsCell>)>,
    cores: Vec<Arc<CoreCounters>>,
}

/// A core's unlabelled (or fixed-label) counters.
#[derive(Debug, Default)]
pub struct CoreCounters {
    dropped: [AtomicU64; DROP_REASONS.len()],
    error_answers: [AtomicU64; 6],
    upstream_discarded: AtomicU64,
    on_demand: [AtomicU64; ON_DEMAND_RESULTS.len()],
}

impl Default for DnsMetrics {
    fn default() -> DnsMetrics {
        let (new_tx, new_rx) = crossbeam_channel::unbounded();
        DnsMetrics {
            new_tx,
            new_rx,
            merged: Mutex::default(),
        }
    }
}

impl DnsMetrics {
    /// A shard for one core (or one test).
    pub fn attach(&self) -> DnsShard {
        let counters = Arc::new(CoreCounters::default());
        self.lock().cores.push(counters.clone());
        DnsShard {
            cells: RefCell::default(),
            new_tx: self.new_tx.clone(),
            counters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Merged> {
        self.merged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (requests, upstream requests, upstream failures) summed over every label set.
    pub fn totals(&self) -> (u64, u64, u64) {
        let mut m = self.lock();
        m.series.extend(self.new_rx.try_iter());
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        m.series.iter().fold((0, 0, 0), |(a, b, c), (_, cell)| {
            (
                a + get(&cell.requests),
                b + get(&cell.upstream_requests),
                c + get(&cell.upstream_failures),
            )
        })
    }

    /// Dropped messages by reason, summed over cores.
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        let m = self.lock();
        dropped_sums(&m.cores)
    }

    /// Writes every DNS family that has samples.
    pub fn collect(&self, e: &mut Encoder) {
        let mut m = self.lock();
        m.series.extend(self.new_rx.try_iter());
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Sum by label set (two cores may hold the same one).
        let mut sums: BTreeMap<&DnsLabels, [u64; 4 + DURATION_BUCKETS.len() + 1]> = BTreeMap::new();
        for (labels, cell) in &m.series {
            let s = sums
                .entry(labels)
                .or_insert([0; 4 + DURATION_BUCKETS.len() + 1]);
            s[0] += get(&cell.requests);
            s[1] += get(&cell.upstream_requests);
            s[2] += get(&cell.upstream_failures);
            s[3] += get(&cell.duration_sum_ns);
            for (i, b) in cell.duration.iter().enumerate() {
                s[4 + i] += get(b);
            }
        }
        fn label_pairs(l: &DnsLabels) -> [(&'static str, &str); 4] {
            [
                ("request_query_type", l.query_type),
                ("request_protocol", l.protocol),
                (
                    "source_canonical_service",
                    unknown(&l.source_canonical_service),
                ),
                (
                    "source_canonical_revision",
                    unknown(&l.source_canonical_revision),
                ),
            ]
        }
        for (idx, name, help) in [
            (
                0,
                "istio_dns_requests_total",
                "Total number of DNS requests (unstable)",
            ),
            (
                1,
                "istio_dns_upstream_requests_total",
                "Total number of DNS requests forwarded to upstream (unstable)",
            ),
            (
                2,
                "istio_dns_upstream_failures_total",
                "Total number of DNS requests that failed to forward upstream (unstable)",
            ),
        ] {
            if sums.values().all(|s| s[idx] == 0) {
                continue;
            }
            e.family(name, Type::Counter, help);
            for (l, s) in &sums {
                if s[idx] > 0 {
                    e.sample(name, label_pairs(l), s[idx]);
                }
            }
        }
        let hist = "istio_dns_upstream_request_duration_seconds";
        if sums.values().any(|s| s[4..].iter().any(|n| *n > 0)) {
            e.family(
                hist,
                Type::Histogram,
                "Total time in seconds Istio takes to get DNS response from upstream (unstable)",
            );
            for (l, s) in &sums {
                let count: u64 = s[4..].iter().sum();
                if count == 0 {
                    continue;
                }
                let mut cumulative = 0;
                for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                    cumulative += s[4 + i];
                    let le = bound.to_string();
                    let mut pairs = label_pairs(l).to_vec();
                    pairs.push(("le", &le));
                    e.sample(&format!("{hist}_bucket"), pairs, cumulative);
                }
                let mut pairs = label_pairs(l).to_vec();
                pairs.push(("le", "+Inf"));
                e.sample(&format!("{hist}_bucket"), pairs, count);
                e.sample(&format!("{hist}_sum"), label_pairs(l), s[3] as f64 / 1e9);
                e.sample(&format!("{hist}_count"), label_pairs(l), count);
            }
        }
        let dropped = dropped_sums(&m.cores);
        if !dropped.is_empty() {
            let name = "zring_dns_rejected_total";
            e.family(
                name,
                Type::Counter,
                "DNS messages the proxy did not serve: dropped, or answered with an error of its own (FORMERR, NOTIMP), by reason",
            );
            for (reason, n) in dropped {
                e.sample(name, [("reason", reason)], n);
            }
        }
        let answers: Vec<u64> = (0..6)
            .map(|i| m.cores.iter().map(|c| get(&c.error_answers[i])).sum())
            .collect();
        if answers.iter().any(|n| *n > 0) {
            let name = "zring_dns_error_answers_total";
            e.family(
                name,
                Type::Counter,
                "Error answers the proxy itself sent (not relayed from upstream), by rcode",
            );
            for (i, n) in answers.iter().enumerate() {
                if *n > 0 {
                    e.sample(name, [("rcode", RCODES[i])], n);
                }
            }
        }
        let discarded: u64 = m.cores.iter().map(|c| get(&c.upstream_discarded)).sum();
        if discarded > 0 {
            let name = "zring_dns_upstream_discarded_total";
            e.family(
                name,
                Type::Counter,
                "Upstream DNS messages discarded: unexpected source, unknown id, or not answering the question asked",
            );
            e.sample(name, [], discarded);
        }
        let on_demand: Vec<u64> = (0..ON_DEMAND_RESULTS.len())
            .map(|i| m.cores.iter().map(|c| get(&c.on_demand[i])).sum())
            .collect();
        if on_demand.iter().any(|n| *n > 0) {
            let name = "zring_dns_on_demand_total";
            e.family(
                name,
                Type::Counter,
                "Resolutions of workloads addressed by hostname, for routing, by result",
            );
            for (i, n) in on_demand.iter().enumerate() {
                if *n > 0 {
                    e.sample(name, [("result", ON_DEMAND_RESULTS[i])], n);
                }
            }
        }
    }
}

/// Every reason of `zring_dns_rejected_total` ([`Dropped::reason`] returns one of these).
pub const DROP_REASONS: [&str; 14] = [
    "truncated",
    "name_too_long",
    "compression_loop",
    "label_type",
    "question_count",
    "bad_opt",
    "response",
    "runt",
    "overload",
    "tcp_framing",
    "opcode",
    "tc_query",
    "rate_limited",
    "client_inflight",
];

/// Every `result` of `zring_dns_on_demand_total` (`dns::ondemand`): a cache hit (an answer or
/// a remembered failure), a lookup that resolved, or why it failed (`dns::cache::Failure`).
pub const ON_DEMAND_RESULTS: [&str; 9] = [
    "hit",
    "negative_hit",
    "resolved",
    "nxdomain",
    "no_data",
    "timeout",
    "upstream_error",
    "no_upstream",
    "busy",
];

/// Dropped counts by reason over `cores`, reasons that happened only.
fn dropped_sums(cores: &[Arc<CoreCounters>]) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for (i, reason) in DROP_REASONS.iter().enumerate() {
        let n: u64 = cores
            .iter()
            .map(|c| c.dropped[i].load(Ordering::Relaxed))
            .sum();
        if n > 0 {
            out.insert(*reason, n);
        }
    }
    out
}

/// Names of the rcodes counted in `zring_dns_error_answers_total`, by value.
const RCODES: [&str; 6] = [
    "noerror", "formerr", "servfail", "nxdomain", "notimp", "refused",
];

fn unknown(v: &str) -> &str {
    if v.is_empty() { "unknown" } else { v }
}

/// One core's DNS series. `Rc` on its core; never shared.
#[derive(Debug)]
pub struct DnsShard {
    cells: RefCell<HashMap<DnsLabels, Arc<DnsCell>>>,
    new_tx: Sender<(DnsLabels, Arc<DnsCell>)>,
    counters: Arc<CoreCounters>,
}

fn bump(a: &AtomicU64, n: u64) {
    // Single writer: a load and a store, no read-modify-write.
    a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl DnsShard {
    /// The cell of `labels`, created (and announced) on first use.
    pub fn cell(&self, labels: &DnsLabels) -> Arc<DnsCell> {
        if let Some(c) = self.cells.borrow().get(labels) {
            return c.clone();
        }
        let cell = Arc::new(DnsCell::default());
        self.cells.borrow_mut().insert(labels.clone(), cell.clone());
        let _ = self.new_tx.send((labels.clone(), cell.clone()));
        cell
    }

    pub fn dropped(&self, why: Dropped) {
        let reason = why.reason();
        // A reason outside the list would be a bug; it is counted as malformed input anyway.
        let i = DROP_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        bump(&self.counters.dropped[i], 1);
    }

    /// An error answer the proxy sent, by rcode value (0..=5).
    pub fn error_answer(&self, rcode: u8) {
        if let Some(a) = self.counters.error_answers.get(usize::from(rcode)) {
            bump(a, 1);
        }
    }

    pub fn upstream_discarded(&self) {
        bump(&self.counters.upstream_discarded, 1);
    }

    /// One on-demand resolution's outcome, one of [`ON_DEMAND_RESULTS`].
    pub fn on_demand(&self, result: &'static str) {
        if let Some(i) = ON_DEMAND_RESULTS.iter().position(|r| *r == result) {
            bump(&self.counters.on_demand[i], 1);
        }
    }
}

impl DnsCell {
    pub fn request(&self) {
        bump(&self.requests, 1);
    }

    pub fn forwarded(&self) {
        bump(&self.upstream_requests, 1);
    }

    pub fn forward_failed(&self) {
        bump(&self.upstream_failures, 1);
    }

    pub fn forward_took(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        bump(&self.duration[i], 1);
        bump(
            &self.duration_sum_ns,
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        );
    }
}
