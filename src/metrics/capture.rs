//! Counters of the node-capture set keeper (`capture::enrolled::Keeper`): updates of the
//! enrolled-pod set that succeeded or failed.
//!
//! Written by the keeper's own thread, read by the metrics server on the control thread: plain
//! atomics, never contended.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct CaptureSetMetrics {
    ok: AtomicU64,
    error: AtomicU64,
}

impl CaptureSetMetrics {
    /// One `nft` transaction on the set, applied or failed.
    pub fn updated(&self, ok: bool) {
        let cell = if ok { &self.ok } else { &self.error };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    /// (applied, failed) updates so far.
    pub fn updates(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
        )
    }
}
