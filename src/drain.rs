//! Graceful drain: what happens between SIGTERM (or `/quitquitquit`) and exit.
//!
//! Threads: [`Drain`] lives in `core::Shared`. The control thread starts a drain
//! ([`Drain::start`]) and then waits ([`wait`]); each core notices at its next housekeeping
//! tick (`runtime::HOUSEKEEPING_TICK`: its housekeeping task reads one atomic) and fires its
//! drain latch: it stops accepting (its listeners close, so the kernel refuses new
//! connections), sends HTTP/2 GOAWAY on its HBONE server connections, and lets every proxied
//! connection run to its end. Cores publish how many
//! connections they still proxy in their own slot of [`Drain::active`] (single writer each, so
//! relaxed loads and stores suffice). The process exits with status 0 when every slot reads 0,
//! or when the deadline passes, whichever comes first; at the deadline the remaining
//! connections are cut by the exit itself.
//!
//! Deadline: `ZRING_DRAIN_DEADLINE` when set; otherwise `TERMINATION_GRACE_PERIOD_SECONDS`
//! minus 5 s when that is above 10 s (Kubernetes kills at the grace period: leave time to
//! exit), else 5 s — ztunnel's rule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use tracing::info;

/// How often [`wait`] reads the cores' counts of open connections.
const WAIT_POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Drain {
    started: AtomicBool,
    /// Per core: connections it proxies right now. Written only by that core, at every open
    /// and close, so each slot has a cache line of its own.
    active: Box<[CachePadded<AtomicU64>]>,
    pub deadline: Duration,
}

impl Drain {
    pub fn new(cores: usize, deadline: Duration) -> Drain {
        Drain {
            started: AtomicBool::new(false),
            active: (0..cores)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            deadline,
        }
    }

    /// Starts draining; returns `false` if a drain had already started.
    pub fn start(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Core `core`'s count of open proxied connections. Only that core writes it.
    pub fn active(&self, core: usize) -> &AtomicU64 {
        &self.active[core]
    }

    /// Open proxied connections across every core.
    pub fn total_active(&self) -> u64 {
        self.active.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

/// The drain deadline from the environment's values (see the module doc).
pub fn deadline(explicit: Option<Duration>, grace_period_secs: Option<u64>) -> Duration {
    match (explicit, grace_period_secs) {
        (Some(d), _) => d,
        (None, Some(g)) if g > 10 => Duration::from_secs(g - 5),
        (None, _) => Duration::from_secs(5),
    }
}

/// Waits until every core's connections are done or the deadline passes. Runs on the control
/// thread after [`Drain::start`]; the caller then ends the process (exit status 0).
pub async fn wait(drain: &Drain) {
    let start = Instant::now();
    info!(
        open = drain.total_active(),
        deadline = ?drain.deadline,
        "draining: no new connections, waiting for open ones to finish"
    );
    loop {
        let open = drain.total_active();
        if open == 0 {
            info!(after = ?start.elapsed(), "drained: every connection finished; exiting");
            break;
        }
        if start.elapsed() >= drain.deadline {
            info!(
                open,
                "drain deadline reached; closing the remaining connections and exiting"
            );
            break;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_follows_ztunnel_rule() {
        assert_eq!(deadline(None, None), Duration::from_secs(5));
        assert_eq!(deadline(None, Some(10)), Duration::from_secs(5));
        assert_eq!(deadline(None, Some(30)), Duration::from_secs(25));
        assert_eq!(
            deadline(Some(Duration::from_millis(1500)), Some(30)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn start_is_once_and_counts_sum() {
        let d = Drain::new(2, Duration::from_secs(1));
        assert!(!d.started());
        assert!(d.start());
        assert!(!d.start());
        assert!(d.started());
        d.active(0).store(2, Ordering::Relaxed);
        d.active(1).store(3, Ordering::Relaxed);
        assert_eq!(d.total_active(), 5);
    }
}
