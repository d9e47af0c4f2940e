//! Counters of node capture, kept by the capture-set keeper's thread (`capture::enrolled::Keeper`
//! and its `capture::watch::Watch`): updates of the enrolled-pod set that succeeded or failed,
//! and whether the ruleset is whole, how often it was found damaged and restored, by reason.
//!
//! Written by the keeper's own thread, read by the metrics server and the readiness check on
//! the control thread: plain atomics, never contended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::text::{Encoder, Type};

/// What was wrong with node capture (the `reason` label). Defined here, not in `capture`, so
/// the metrics need nothing from the module that writes them; `capture::watch::Damage` is this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDamage {
    /// `table ip zring` is gone (flush ruleset, table deleted), or was never installed.
    Missing,
    /// The table differs from the baseline (a chain or rule edited, added or removed).
    Altered,
    /// The table is whole but the policy route (`fwmark 0x111 lookup 133`, its local route) is not.
    Routing,
}

impl CaptureDamage {
    pub const ALL: [CaptureDamage; 3] = [
        CaptureDamage::Missing,
        CaptureDamage::Altered,
        CaptureDamage::Routing,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            CaptureDamage::Missing => "missing",
            CaptureDamage::Altered => "altered",
            CaptureDamage::Routing => "routing",
        }
    }

    fn index(self) -> usize {
        match self {
            CaptureDamage::Missing => 0,
            CaptureDamage::Altered => 1,
            CaptureDamage::Routing => 2,
        }
    }
}

#[derive(Debug, Default)]
pub struct CaptureSetMetrics {
    ok: AtomicU64,
    error: AtomicU64,
    /// Node mode: a watch runs (the families below are written only then).
    watched: AtomicBool,
    /// Node mode: the ruleset and policy route are as they should be (the readiness gate).
    intact: AtomicBool,
    damaged: [AtomicU64; 3],
    restored: [AtomicU64; 3],
    restore_errors: AtomicU64,
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

    /// A watch runs: the readiness gate and the watch's families apply.
    pub fn set_watched(&self) {
        self.watched.store(true, Ordering::Release);
    }

    pub fn watched(&self) -> bool {
        self.watched.load(Ordering::Acquire)
    }

    pub fn set_intact(&self, intact: bool) {
        self.intact.store(intact, Ordering::Release);
    }

    /// Whether capture was whole at the watch's last look.
    pub fn intact(&self) -> bool {
        self.intact.load(Ordering::Acquire)
    }

    /// Capture found damaged (once per episode).
    pub fn damaged(&self, why: CaptureDamage) {
        self.damaged[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Capture put back after `why`.
    pub fn restored(&self, why: CaptureDamage) {
        self.restored[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A restore that failed.
    pub fn restore_failed(&self) {
        self.restore_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// (damaged, restored) counts for `why`.
    pub fn damage_counts(&self, why: CaptureDamage) -> (u64, u64) {
        (
            self.damaged[why.index()].load(Ordering::Relaxed),
            self.restored[why.index()].load(Ordering::Relaxed),
        )
    }

    pub fn restore_errors(&self) -> u64 {
        self.restore_errors.load(Ordering::Relaxed)
    }
}

/// The watch's families (node mode only): `zring_capture_intact`,
/// `zring_capture_damaged_total{reason}`, `zring_capture_restored_total{reason}`,
/// `zring_capture_restore_errors_total`.
pub(super) fn write_watch(m: &CaptureSetMetrics, e: &mut Encoder) {
    if !m.watched() {
        return;
    }
    e.family(
        "zring_capture_intact",
        Type::Gauge,
        "1 while node capture (nftables table ip zring and its policy route) is whole",
    );
    e.sample("zring_capture_intact", [], u64::from(m.intact()));
    let families = [
        (
            "zring_capture_damaged_total",
            "Times node capture was found removed or altered, by reason",
        ),
        (
            "zring_capture_restored_total",
            "Times zring put node capture back, by what was wrong",
        ),
    ];
    for (i, (name, help)) in families.into_iter().enumerate() {
        e.family(name, Type::Counter, help);
        for why in CaptureDamage::ALL {
            let (damaged, restored) = m.damage_counts(why);
            let n = if i == 0 { damaged } else { restored };
            e.sample(name, [("reason", why.reason())], n);
        }
    }
    e.family(
        "zring_capture_restore_errors_total",
        Type::Counter,
        "Attempts to restore node capture that failed",
    );
    e.sample("zring_capture_restore_errors_total", [], m.restore_errors());
}
