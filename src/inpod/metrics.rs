//! Counters and gauges of the ZDS client, as plain atomics: the `zring-inpod` thread writes them,
//! tests and (later) the metrics server read them. Names follow ztunnel's
//! `workload_manager_*` series where ztunnel has one; the rest are zring's own.
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
    /// `workload_manager_proxies_started_total`: successful adds (the handler said yes).
    pub proxies_started: AtomicU64,
    /// `workload_manager_proxies_stopped_total`: enrolled pods removed (del, reconciliation,
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

    pub(super) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
