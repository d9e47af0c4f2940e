//! Counters and gauges of the ZDS client, as plain atomics: the `zring-inpod` thread writes them,
//! tests and the metrics server (a scrape, [`Metrics::collect`]) read them. Names follow
//! ztunnel's where ztunnel has the series (its `src/inpod/metrics.rs`, registered under the
//! `workload_manager` prefix: `workload_manager_inpod_active_proxy_count` and
//! `…_pending_proxy_count` gauges, `…_proxies_started_total` and `…_proxies_stopped_total`
//! counters); the rest are zring's own, `zring_inpod_*`.
//!
//! Invariant: only the `zring-inpod` thread writes (Relaxed is enough: each value is read on
//! its own, never as a consistent set).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// `workload_manager_active_proxy_count`: pods enrolled and served now.
    pub active_proxy_count: AtomicU64,
    /// `workload_manager_pending_proxy_count`: pods whose add the handler refused, retried.
    pub pending_proxy_count: AtomicU64,
    /// `workload_manager_inpod_proxies_started_total`: successful adds (the handler said yes).
    pub proxies_started: AtomicU64,
    /// `workload_manager_inpod_proxies_stopped_total`: enrolled pods removed (del, reconciliation,
    /// replacement, shutdown).
    pub proxies_stopped: AtomicU64,
    /// Adds the handler refused (each retry that fails counts again).
    pub add_failures: AtomicU64,
    /// Removes the handler reported as failed (the pod left the registry anyway).
    pub remove_failures: AtomicU64,
    /// Packets that were no usable request (undecodable, truncated, bad descriptors, …).
    pub bad_requests: AtomicU64,
    /// Well-formed requests out of order (keep after snapshot_sent, a second snapshot_sent).
    pub protocol_errors: AtomicU64,
    /// `del` of a uid the registry does not hold (acked: deletes are idempotent).
    pub unknown_deletes: AtomicU64,
    /// Connections made to the agent (each starts with the hello and a new snapshot).
    pub connections: AtomicU64,
    /// Failed connection attempts (agent absent or refusing).
    pub connect_failures: AtomicU64,
    /// Whether this connection's snapshot was acked and no pod is pending: readiness.
    pub ready: AtomicBool,
}

/// The values of [`Metrics`] at one moment, for assertions and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub active_proxy_count: u64,
    pub pending_proxy_count: u64,
    pub proxies_started: u64,
    pub proxies_stopped: u64,
    pub add_failures: u64,
    pub remove_failures: u64,
    pub bad_requests: u64,
    pub protocol_errors: u64,
    pub unknown_deletes: u64,
    pub connections: u64,
    pub connect_failures: u64,
    pub ready: bool,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            active_proxy_count: get(&self.active_proxy_count),
            pending_proxy_count: get(&self.pending_proxy_count),
            proxies_started: get(&self.proxies_started),
            proxies_stopped: get(&self.proxies_stopped),
            add_failures: get(&self.add_failures),
            remove_failures: get(&self.remove_failures),
            bad_requests: get(&self.bad_requests),
            protocol_errors: get(&self.protocol_errors),
            unknown_deletes: get(&self.unknown_deletes),
            connections: get(&self.connections),
            connect_failures: get(&self.connect_failures),
            ready: self.ready.load(Ordering::Relaxed),
        }
    }

    /// Whether the agent's snapshot was acknowledged and no pod is pending: readiness.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(super) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl crate::metrics::Collect for Metrics {
    fn collect(&self, e: &mut crate::metrics::Encoder) {
        use crate::metrics::Type::{Counter, Gauge};
        let m = self.snapshot();
        let families: [(&str, _, &str, u64); 12] = [
            (
                "workload_manager_inpod_active_proxy_count",
                Gauge,
                "Pods enrolled by istio-cni and served (listeners inside their netns on every core)",
                m.active_proxy_count,
            ),
            (
                "workload_manager_inpod_pending_proxy_count",
                Gauge,
                "Pods istio-cni handed over that could not be served yet (retried)",
                m.pending_proxy_count,
            ),
            (
                "workload_manager_inpod_proxies_started_total",
                Counter,
                "Pods that started being served",
                m.proxies_started,
            ),
            (
                "workload_manager_inpod_proxies_stopped_total",
                Counter,
                "Pods that stopped being served (deleted, reconciled away, replaced, shutdown)",
                m.proxies_stopped,
            ),
            (
                "zring_inpod_add_failures_total",
                Counter,
                "Pod adds that failed (each failed retry counts)",
                m.add_failures,
            ),
            (
                "zring_inpod_remove_failures_total",
                Counter,
                "Pod removals that reported a failure",
                m.remove_failures,
            ),
            (
                "zring_inpod_bad_requests_total",
                Counter,
                "Packets from the node agent that were no usable request",
                m.bad_requests,
            ),
            (
                "zring_inpod_protocol_errors_total",
                Counter,
                "Requests from the node agent out of order",
                m.protocol_errors,
            ),
            (
                "zring_inpod_unknown_deletes_total",
                Counter,
                "Deletes of pods that were not enrolled",
                m.unknown_deletes,
            ),
            (
                "zring_inpod_agent_connections_total",
                Counter,
                "Connections made to the node agent",
                m.connections,
            ),
            (
                "zring_inpod_agent_connect_failures_total",
                Counter,
                "Failed connection attempts to the node agent",
                m.connect_failures,
            ),
            (
                "zring_inpod_snapshot_ready",
                Gauge,
                "1 once the node agent's snapshot is acknowledged with no pod pending",
                u64::from(m.ready),
            ),
        ];
        for (name, kind, help, value) in families {
            e.family(name, kind, help);
            e.sample(name, [], value);
        }
    }
}
