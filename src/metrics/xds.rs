//! Counters of the control thread's xDS client: streams that ended and why, responses ACKed or
//! NACKed per type, resources rejected per type.
//!
//! Written by the xDS client on the control thread, read by the metrics server (also on the
//! control thread, but from another task): plain atomics, never contended.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::xds_types::Kind;

/// Why an xDS stream ended (ztunnel's `reason` label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The stream could not be established (connect, TLS, or the initial call failed).
    ConnectionError,
    /// An established stream failed.
    Error,
    /// istiod ended the stream cleanly.
    Complete,
}

impl Termination {
    pub const ALL: [Termination; 3] = [
        Termination::ConnectionError,
        Termination::Error,
        Termination::Complete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Termination::ConnectionError => "ConnectionError",
            Termination::Error => "Error",
            Termination::Complete => "Complete",
        }
    }

    fn index(self) -> usize {
        match self {
            Termination::ConnectionError => 0,
            Termination::Error => 1,
            Termination::Complete => 2,
        }
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Address => 0,
        Kind::Authorization => 1,
    }
}

#[derive(Debug, Default)]
pub struct XdsMetrics {
    terminations: [AtomicU64; 3],
    /// Per type: responses ACKed, responses NACKed.
    responses: [[AtomicU64; 2]; 2],
    rejected: [AtomicU64; 2],
}

impl XdsMetrics {
    pub fn terminated(&self, why: Termination) {
        self.terminations[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// One response of `kind` handled: ACKed when `rejected` is 0, NACKed otherwise.
    pub fn response(&self, kind: Kind, rejected: usize) {
        let k = kind_index(kind);
        let nack = usize::from(rejected > 0);
        self.responses[k][nack].fetch_add(1, Ordering::Relaxed);
        self.rejected[k].fetch_add(rejected as u64, Ordering::Relaxed);
    }

    pub fn terminations(&self, why: Termination) -> u64 {
        self.terminations[why.index()].load(Ordering::Relaxed)
    }

    /// (ACKed, NACKed) responses of `kind`.
    pub fn responses(&self, kind: Kind) -> (u64, u64) {
        let r = &self.responses[kind_index(kind)];
        (r[0].load(Ordering::Relaxed), r[1].load(Ordering::Relaxed))
    }

    pub fn rejected(&self, kind: Kind) -> u64 {
        self.rejected[kind_index(kind)].load(Ordering::Relaxed)
    }
}
