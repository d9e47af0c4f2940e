//! What a core is: the context one per-core runtime holds ([`CoreCtx`]), the handles the
//! control thread publishes to every core ([`Shared`]), the guards that count a core's open
//! connections, its connection table (`conns`), its drain latch ([`CoreCtx::draining`]) and its
//! random numbers. How cores are started and what tasks they run is `runtime`.
//!
//! Threads: a `CoreCtx` is built inside its core's thread and lives in an `Rc` there, `!Send`
//! by construction, never shared with another thread. The only cross-thread inputs are the
//! [`Shared`] handles published by the control thread; the only cross-thread output besides
//! metrics is the core's heartbeat in [`Shared::health`].

pub mod conns;
pub mod faults;
pub mod health;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::drain::Drain;
use crate::hbone::pool::Pool;
use crate::hbone::tls::TlsCache;
use crate::identity::CertStore;
use crate::latch::Latch;
use crate::metrics::{Registry, Shard};
use crate::net::BufferPool;
use crate::rng::Rng;
use crate::state::Snapshot;

/// The monoio driver a core runs (it lives in `net`, the data path's leaf, which `hbone` uses).
pub use crate::net::Driver;
pub use conns::ConnTable;
pub use faults::{Fault, Faults};
pub use health::Health;

/// How often a task waiting for something the snapshot does not hold yet
/// ([`CoreCtx::wait_in_snapshot`]) looks at the published pointer again.
pub const SNAPSHOT_POLL: Duration = Duration::from_millis(10);

/// Handles every core reads; published by the control thread.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    /// The current workload snapshot; cores `load_full()` it once per connection.
    pub snapshot: ArcSwap<Snapshot>,
    /// Workload certificates for this node's identities, and the trust roots.
    pub certs: ArcSwap<CertStore>,
    /// Whether a drain has started, and each core's count of open connections.
    pub drain: Drain,
    /// Where each core attaches its metrics shard; the metrics server scrapes it.
    pub metrics: Arc<Registry>,
    /// Where a captured connection would reach zring itself (node mode: this node's addresses,
    /// kept current by the control thread); the outbound route refuses those.
    pub own_addrs: ArcSwap<crate::net::own::OwnAddrs>,
    /// What each published snapshot changed for authorization (recorded by the control thread
    /// before it publishes): a core re-checks only the connections a change can affect.
    pub policy_changes: crate::rbac::ChangeFeed,
    /// Each core's and the control thread's heartbeat, and which cores have exited; readiness
    /// and liveness read it.
    pub health: Health,
    /// The test-only fault hook (`ZRING_TEST_FAULTS`); empty in production.
    pub faults: Faults,
}

/// One core's context. Lives in an `Rc` on its own thread.
#[derive(Debug)]
pub struct CoreCtx {
    pub id: usize,
    pub driver: Driver,
    pub shared: Arc<Shared>,
    pub buffers: BufferPool,
    /// This core's HBONE client connections.
    pub pool: Pool,
    /// This core's rustls configs, rebuilt when the published certificates change.
    pub tls: TlsCache,
    /// Connections whose authorization is re-checked when policies change.
    pub conns: ConnTable,
    /// The drain latch: fired (by `housekeeping`) when this core starts draining; then its
    /// listeners close and its HBONE servers send GOAWAY.
    pub draining: Latch<()>,
    /// Connections this core is proxying right now.
    pub active: Cell<u64>,
    /// HBONE connections this core's 15008 listener holds right now (their streams are in
    /// `active`): an open tunnel with no stream is still memory in use, not an idle core.
    pub tunnels_in: Cell<u64>,
    /// This core's metrics shard (single writer: only this core writes its cells).
    pub metrics: Rc<Shard>,
    /// What this core's 15008 lets clients hold (connections, streams, receive windows).
    pub hbone_gate: Rc<crate::hbone::limits::Gate>,
    /// Endpoint selection and trace ids; per core, so no atomics.
    rng: Cell<Rng>,
}

impl CoreCtx {
    /// Core `id`'s context, running `driver`: attaches the core's metrics shard and builds its
    /// empty pools. Called once, on the core's own thread.
    pub fn new(id: usize, driver: Driver, shared: Arc<Shared>) -> CoreCtx {
        let cfg = shared.config.clone();
        let seed =
            0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) << 32) ^ u64::from(std::process::id());
        let metrics = Rc::new(shared.metrics.attach_core(id, driver.name()));
        CoreCtx {
            id,
            driver,
            buffers: BufferPool::new(cfg.buffer_size),
            pool: Pool::new(cfg.pool_max_streams, cfg.pool_idle_timeout, metrics.clone()),
            hbone_gate: Rc::new(crate::hbone::limits::Gate::new(
                cfg.hbone_limits,
                cfg.cores,
                metrics.clone(),
            )),
            metrics,
            tls: TlsCache::default(),
            conns: ConnTable::default(),
            draining: Latch::default(),
            shared,
            active: Cell::new(0),
            tunnels_in: Cell::new(0),
            rng: Cell::new(Rng::new(seed)),
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Counts a connection as active until the returned guard drops (whatever ends it). The
    /// count is mirrored into this core's slot of `Drain::active`, which only this core writes.
    pub fn track(&self) -> ActiveGuard<'_> {
        self.set_active(self.active.get() + 1);
        ActiveGuard(self)
    }

    /// Counts an inbound HBONE connection until the returned guard drops.
    pub fn track_tunnel(&self) -> TunnelGuard<'_> {
        self.tunnels_in.set(self.tunnels_in.get() + 1);
        TunnelGuard(self)
    }

    /// Whether this core holds nothing: no connection, no inbound or pooled HBONE connection.
    pub fn is_idle(&self) -> bool {
        self.active.get() == 0 && self.tunnels_in.get() == 0 && self.pool.connections() == 0
    }

    fn set_active(&self, n: u64) {
        self.active.set(n);
        self.shared
            .drain
            .active(self.id)
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits, up to `bound`, until `find` finds what it looks for in the published snapshot;
    /// `snapshot` is the one the caller holds, replaced by each newer one looked at.
    ///
    /// Why a poll: a workload the control thread has not published yet (a pod newer than the
    /// snapshot) arrives within milliseconds to seconds, and the wait must not cost anything
    /// when nobody waits. Each waiter sleeps [`SNAPSHOT_POLL`] on the core's timer and compares
    /// the published pointer with its own (no reference count taken); `find` runs again only
    /// on a new snapshot. Nothing runs on the core for this while no connection waits.
    pub async fn wait_in_snapshot<T>(
        &self,
        snapshot: &mut Arc<Snapshot>,
        bound: Duration,
        mut find: impl FnMut(&Snapshot) -> Option<T>,
    ) -> Option<T> {
        if let Some(found) = find(snapshot) {
            return Some(found);
        }
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            monoio::time::sleep(left.min(SNAPSHOT_POLL)).await;
            if std::ptr::eq(&**self.shared.snapshot.load(), &**snapshot) {
                continue;
            }
            *snapshot = self.shared.snapshot.load_full();
            if let Some(found) = find(snapshot) {
                return Some(found);
            }
        }
    }

    /// A pseudo-random number for load balancing (not for anything security related).
    pub fn random(&self) -> u64 {
        let mut rng = self.rng.get();
        let x = rng.next_u64();
        self.rng.set(rng);
        x
    }
}

/// See [`CoreCtx::track`].
#[derive(Debug)]
pub struct ActiveGuard<'a>(&'a CoreCtx);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.set_active(self.0.active.get() - 1);
    }
}

/// See [`CoreCtx::track_tunnel`].
#[derive(Debug)]
pub struct TunnelGuard<'a>(&'a CoreCtx);

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        self.0.tunnels_in.set(self.0.tunnels_in.get() - 1);
    }
}
