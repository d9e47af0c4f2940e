//! The HBONE server's (15008) limit counters and gauges: connections closed idle, streams
//! refused, and the receive-window budget (`zring_hbone_*`). Connection refusals are
//! `Refusal`s in the shard (`zring_hbone_connections_refused_total`).
//!
//! Written by one core each (`hbone::limits::Gate`, single writer: a relaxed load and store),
//! read by the metrics server on the control thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::shard::{CoreGauges, bump};
use super::text::{Encoder, Type};

/// One core's 15008 limit figures.
#[derive(Debug, Default)]
pub struct HboneGauges {
    /// Tunnels closed (GOAWAY) after carrying no stream for the idle timeout.
    pub closed_idle: AtomicU64,
    /// Streams refused (RST_STREAM REFUSED_STREAM): their identity held its cap.
    pub streams_refused_identity: AtomicU64,
    /// Receive-window growths granted from the budget, and refused for want of it.
    pub window_grown: AtomicU64,
    pub window_denied: AtomicU64,
    /// Bytes of receive window reserved from the budget now, and the budget.
    pub reserved_bytes: AtomicU64,
    pub budget_bytes: AtomicU64,
    /// HBONE server connections held now (from accept to close).
    pub connections: AtomicU64,
}

impl HboneGauges {
    pub fn count(counter: &AtomicU64) {
        bump(counter, 1);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }
}

/// Writes the families, summed over cores (gauges also per core).
pub(super) fn write(cores: &[Arc<CoreGauges>], e: &mut Encoder) {
    let sum = |f: fn(&HboneGauges) -> &AtomicU64| -> u64 {
        cores
            .iter()
            .map(|c| f(&c.hbone).load(Ordering::Relaxed))
            .sum()
    };
    e.family(
        "zring_hbone_connections_closed_idle_total",
        Type::Counter,
        "HBONE connections (15008) closed with GOAWAY after carrying no stream for ZRING_HBONE_IDLE_TIMEOUT",
    );
    e.sample(
        "zring_hbone_connections_closed_idle_total",
        [],
        sum(|h| &h.closed_idle),
    );
    e.family(
        "zring_hbone_streams_refused_total",
        Type::Counter,
        "HBONE streams refused with RST_STREAM REFUSED_STREAM, by reason",
    );
    e.sample(
        "zring_hbone_streams_refused_total",
        [("reason", "identity_limit")],
        sum(|h| &h.streams_refused_identity),
    );
    e.family(
        "zring_hbone_receive_window_growths_total",
        Type::Counter,
        "HBONE server connections' receive windows grown (granted) or kept (denied: budget spent)",
    );
    e.sample(
        "zring_hbone_receive_window_growths_total",
        [("result", "granted")],
        sum(|h| &h.window_grown),
    );
    e.sample(
        "zring_hbone_receive_window_growths_total",
        [("result", "denied")],
        sum(|h| &h.window_denied),
    );
    let ids: Vec<String> = cores.iter().map(|c| c.core.to_string()).collect();
    for (name, help, f) in [
        (
            "zring_hbone_receive_reserved_bytes",
            "HTTP/2 receive window reserved by HBONE server connections (the most they can make zring buffer), per core",
            (|h: &HboneGauges| &h.reserved_bytes) as fn(&HboneGauges) -> &AtomicU64,
        ),
        (
            "zring_hbone_receive_budget_bytes",
            "The receive-window budget of a core's HBONE server connections",
            |h| &h.budget_bytes,
        ),
        (
            "zring_hbone_connections_open",
            "HBONE server connections (15008) a core holds now",
            |h| &h.connections,
        ),
    ] {
        e.family(name, Type::Gauge, help);
        for (c, id) in cores.iter().zip(&ids) {
            e.sample(
                name,
                [("core", id.as_str())],
                f(&c.hbone).load(Ordering::Relaxed),
            );
        }
    }
}
