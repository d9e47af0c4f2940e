//! Whether the process still turns: each core's heartbeat (bumped by its housekeeping task every
//! tick), each core's death (a guard in its thread), and the control thread's heartbeat.
//! Readiness (15021 `/healthz/ready`) and liveness (`/healthz/live`) read [`Health::check`].
//!
//! Why: a core whose thread ended (a panic outside a contained task) or whose loop stopped
//! turning (a blocking call, a livelock) still holds its share of the SO_REUSEPORT listeners, so
//! the kernel keeps handing it connections nobody accepts. Nothing else would notice; the
//! DaemonSet's liveness probe restarts the process instead.
//!
//! Threads: written by each core (its own slot only) and by the control thread; read by the
//! admin thread. Plain relaxed atomics: a beat is a timestamp, not a handshake.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a core may go without a heartbeat before it counts as stalled. Its housekeeping
/// ticks every 100 ms; a busy core still yields between connections, so seconds of silence
/// mean its loop has stopped.
pub const CORE_STALL: Duration = Duration::from_secs(5);
/// How long the control thread may go without a heartbeat (it beats every second; a full
/// snapshot rebuild of 100,000 workloads takes about half a second).
pub const CONTROL_STALL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Health {
    start: Instant,
    cores: Box<[Beat]>,
    control: AtomicU64,
}

#[derive(Debug, Default)]
struct Beat {
    /// Milliseconds since `start` at the last beat, plus one; 0: never beaten (not started).
    at: AtomicU64,
    dead: AtomicBool,
}

/// Marks its core dead when dropped: held by the core's thread for its whole life, so a panic
/// that unwinds the thread marks it too.
#[derive(Debug)]
pub struct Alive<'a> {
    health: &'a Health,
    core: usize,
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.health.cores.get(self.core) {
            b.dead.store(true, Ordering::Release);
        }
        tracing::error!(
            core = self.core,
            panicked = std::thread::panicking(),
            "core thread exited: the process is no longer live"
        );
    }
}

impl Health {
    pub fn new(cores: usize) -> Health {
        // An epoch an hour back, so a beat "long ago" is representable from the first moment
        // (tests pretend stalls); 0 stays the "never beaten" mark.
        let now = Instant::now();
        Health {
            start: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            cores: (0..cores).map(|_| Beat::default()).collect(),
            control: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Core `core` turned its loop.
    pub fn beat(&self, core: usize) {
        if let Some(b) = self.cores.get(core) {
            b.at.store(self.now(), Ordering::Relaxed);
        }
    }

    /// The control thread turned its loop.
    pub fn beat_control(&self) {
        self.control.store(self.now(), Ordering::Relaxed);
    }

    /// A guard that marks core `core` dead when its thread ends.
    pub fn alive(&self, core: usize) -> Alive<'_> {
        Alive { health: self, core }
    }

    /// `Ok` while every started core and the control thread turn; else what is wrong. A core or
    /// thread that has not beaten yet is not judged (it has not started).
    pub fn check(&self) -> Result<(), String> {
        let now = self.now();
        let silent = |at: u64| Duration::from_millis(now.saturating_sub(at));
        for (id, b) in self.cores.iter().enumerate() {
            if b.dead.load(Ordering::Acquire) {
                return Err(format!("core {id} has exited"));
            }
            let at = b.at.load(Ordering::Relaxed);
            if at != 0 && silent(at) > CORE_STALL {
                return Err(format!(
                    "core {id} stalled: its loop has not turned for {:.1}s",
                    silent(at).as_secs_f64()
                ));
            }
        }
        let at = self.control.load(Ordering::Relaxed);
        if at != 0 && silent(at) > CONTROL_STALL {
            return Err(format!(
                "the control thread stalled: no turn for {:.1}s",
                silent(at).as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Cores that have exited or stalled, for the metrics.
    pub fn unhealthy_cores(&self) -> usize {
        let now = self.now();
        self.cores
            .iter()
            .filter(|b| {
                let at = b.at.load(Ordering::Relaxed);
                b.dead.load(Ordering::Acquire)
                    || (at != 0 && Duration::from_millis(now.saturating_sub(at)) > CORE_STALL)
            })
            .count()
    }

    /// Test support: pretends core `core` last beat `ago` ago.
    #[cfg(test)]
    pub(crate) fn set_beat_ago(&self, core: usize, ago: Duration) {
        let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
        if let Some(b) = self.cores.get(core) {
            b.at.store(self.now().saturating_sub(ago).max(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_started_cores_only() {
        let h = Health::new(2);
        assert_eq!(h.check(), Ok(()), "nothing started yet");
        h.beat(0);
        h.beat(1);
        h.beat_control();
        assert_eq!(h.check(), Ok(()));
        h.set_beat_ago(1, CORE_STALL + Duration::from_secs(1));
        let e = h.check().unwrap_err();
        assert!(e.starts_with("core 1 stalled"), "{e}");
        assert_eq!(h.unhealthy_cores(), 1);
        h.beat(1);
        assert_eq!(h.check(), Ok(()));
        drop(h.alive(0));
        assert_eq!(h.check(), Err("core 0 has exited".into()));
        assert_eq!(h.unhealthy_cores(), 1);
    }
}
