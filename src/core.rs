//! Per-core runtimes: one pinned OS thread per core, each running its own monoio runtime that
//! owns its listeners (SO_REUSEPORT), buffers and connection tasks.
//!
//! Threads: `start` runs on the main thread and returns once every core has bound its
//! listeners (or the first core failed). Everything inside `run_core` is `!Send` by
//! construction: the [`CoreCtx`] lives in an `Rc` and is never shared with another thread.
//! The only cross-thread inputs are the [`Shared`] handles published by the control thread.

pub mod buffers;
pub mod conns;
pub mod signal;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use monoio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{Config, DriverChoice};
use crate::drain::{DRAIN_WATCH, Drain};
use crate::identity::CertStore;
use crate::metrics::{Registry, Shard};
use crate::proxy::hbone::tls::TlsCache;
use crate::proxy::pool::Pool;
use crate::state::Snapshot;
use crate::sys::socket::{self, ListenOpts};

pub use buffers::BufferPool;
pub use conns::ConnTable;
pub use signal::Signal;

/// The monoio driver a core runs, resolved once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Legacy,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "io_uring",
            Driver::Legacy => "epoll",
        }
    }
}

/// Turns the configured choice into the driver to run, probing io_uring for `Auto`.
/// Returns the driver and, when `Auto` fell back, why.
pub fn resolve_driver(
    choice: DriverChoice,
    entries: u32,
) -> Result<(Driver, Option<String>), StartError> {
    let probe = || -> io::Result<()> {
        if !monoio::utils::detect_uring() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel lacks the io_uring operations monoio needs",
            ));
        }
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .build()
            .map(drop)
    };
    match choice {
        DriverChoice::Legacy => Ok((Driver::Legacy, None)),
        DriverChoice::Uring => probe()
            .map(|()| (Driver::Uring, None))
            .map_err(StartError::Uring),
        DriverChoice::Auto => match probe() {
            Ok(()) => Ok((Driver::Uring, None)),
            Err(e) => Ok((Driver::Legacy, Some(e.to_string()))),
        },
    }
}

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
    /// Fired when this core starts draining: listeners close, HBONE servers send GOAWAY.
    pub draining: Signal,
    /// Connections this core is proxying right now.
    pub active: Cell<u64>,
    /// HBONE connections this core's 15008 listener holds right now (their streams are in
    /// `active`): an open tunnel with no stream is still memory in use, not an idle core.
    pub tunnels_in: Cell<u64>,
    /// This core's metrics shard (single writer: only this core writes its cells).
    pub metrics: Rc<Shard>,
    /// State of a xorshift generator for endpoint selection; per core, so no atomics.
    rng: Cell<u64>,
}

impl CoreCtx {
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

    /// A pseudo-random number for load balancing (not for anything security related).
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
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

/// What a listener does with the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// 15001: connections captured from local pods, original destination preserved.
    Outbound,
    /// 15006: plaintext connections to local pods, captured on arrival.
    InboundPlaintext,
    /// 15008: HBONE (mTLS HTTP/2 CONNECT) from other nodes to local pods.
    Inbound,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Outbound => "outbound",
            ListenerKind::InboundPlaintext => "inbound_plaintext",
            ListenerKind::Inbound => "inbound",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("io_uring unavailable (set ZRING_DRIVER=legacy or auto to use epoll): {0}")]
    Uring(io::Error),
    #[error("core {core}: cannot build the {driver} runtime: {source}")]
    Runtime {
        core: usize,
        driver: &'static str,
        source: io::Error,
    },
    #[error("core {core}: cannot listen on {addr} ({kind}): {source}")]
    Listen {
        core: usize,
        addr: SocketAddr,
        kind: &'static str,
        source: io::Error,
    },
    #[error("core {core} exited during start-up")]
    Died { core: usize },
    #[error("cannot start core thread: {0}")]
    Thread(io::Error),
}

/// Starts `config.cores` core threads and waits until each has bound its listeners.
pub fn start(
    shared: Arc<Shared>,
    driver: Driver,
) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    let cores = shared.config.cores;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<usize, StartError>>(cores);
    let mut handles = Vec::with_capacity(cores);
    for id in 0..cores {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let pin = shared.config.pin_cores.then_some(id % cpus);
        let h = std::thread::Builder::new()
            .name(format!("zring-core-{id}"))
            .spawn(move || {
                if let Some(cpu) = pin
                    && let Err(e) = monoio::utils::bind_to_cpu_set([cpu])
                {
                    warn!(core = id, cpu, "cannot pin core thread: {e:?}");
                }
                run_core(id, driver, shared, ready);
            })
            .map_err(StartError::Thread)?;
        handles.push(h);
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartError::Died { core: usize::MAX }),
        }
    }
    Ok(handles)
}

fn run_core(
    id: usize,
    driver: Driver,
    shared: Arc<Shared>,
    ready: crossbeam_channel::Sender<Result<usize, StartError>>,
) {
    let entries = shared.config.uring_entries;
    let fut = core_main(id, driver, shared, ready.clone());
    let built = match driver {
        Driver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut)),
        Driver::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut)),
    };
    if let Err(source) = built {
        let _ = ready.send(Err(StartError::Runtime {
            core: id,
            driver: driver.name(),
            source,
        }));
    }
}

async fn core_main(
    id: usize,
    driver: Driver,
    shared: Arc<Shared>,
    ready: crossbeam_channel::Sender<Result<usize, StartError>>,
) {
    let cfg = shared.config.clone();
    let seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((id as u64 + 1) << 32) ^ u64::from(std::process::id());
    let metrics = Rc::new(shared.metrics.attach_core(id, driver.name()));
    let ctx = Rc::new(CoreCtx {
        id,
        driver,
        buffers: BufferPool::new(cfg.buffer_size),
        pool: Pool::new(cfg.pool_max_streams, cfg.pool_idle_timeout, metrics.clone()),
        metrics,
        tls: TlsCache::default(),
        conns: ConnTable::default(),
        draining: Signal::default(),
        shared,
        active: Cell::new(0),
        tunnels_in: Cell::new(0),
        rng: Cell::new(seed | 1),
    });
    let opts = ListenOpts {
        transparent: true,
        reuse_port: true,
        backlog: cfg.listen_backlog,
    };
    let mut listeners = Vec::new();
    for (kind, addr) in [
        (ListenerKind::Outbound, cfg.outbound_addr),
        (ListenerKind::InboundPlaintext, cfg.inbound_plaintext_addr),
        (ListenerKind::Inbound, cfg.inbound_addr),
    ] {
        match socket::listener(addr, opts).and_then(TcpListener::from_std) {
            Ok(l) => listeners.push((kind, l)),
            Err(source) => {
                let _ = ready.send(Err(StartError::Listen {
                    core: id,
                    addr,
                    kind: kind.name(),
                    source,
                }));
                return;
            }
        }
    }
    info!(
        core = id,
        driver = driver.name(),
        "core listening on 15001 (outbound), 15006 (inbound plaintext), 15008 (inbound HBONE)"
    );
    let _ = ready.send(Ok(id));
    drop(ready);

    let mut tasks = Vec::new();
    tasks.push(monoio::spawn(reap_pool(ctx.clone())));
    tasks.push(monoio::spawn(housekeeping(ctx.clone())));
    tasks.push(monoio::spawn(crate::metrics::flush_loop(
        ctx.metrics.clone(),
    )));
    for (kind, listener) in listeners {
        tasks.push(monoio::spawn(accept_loop(ctx.clone(), listener, kind)));
    }
    for t in tasks {
        t.await;
    }
}

/// Releases idle and dead HBONE connections of this core's pool, forever.
async fn reap_pool(ctx: Rc<CoreCtx>) {
    let interval = ctx.pool.reap_interval();
    loop {
        monoio::time::sleep(interval).await;
        let released = ctx.pool.reap(std::time::Instant::now());
        if released > 0 {
            info!(
                core = ctx.id,
                released,
                open = ctx.pool.connections(),
                "released idle HBONE connections"
            );
        }
    }
}

/// Watches what the control thread publishes, every [`DRAIN_WATCH`]: a new snapshot makes the
/// core re-decide its registered connections and close those the new policies deny (a pointer
/// comparison when nothing changed); a started drain fires the core's `draining` signal.
async fn housekeeping(ctx: Rc<CoreCtx>) {
    let mut seen = ctx.shared.snapshot.load_full();
    let mut memory = MemoryKeeper::default();
    loop {
        monoio::time::sleep(DRAIN_WATCH).await;
        memory.tick(&ctx);
        if ctx.shared.drain.started() && !ctx.draining.is_fired() {
            info!(
                core = ctx.id,
                open = ctx.active.get(),
                "draining: closing listeners, GOAWAY to HBONE clients"
            );
            ctx.draining.fire();
        }
        let current = ctx.shared.snapshot.load_full();
        if Arc::ptr_eq(&current, &seen) {
            continue;
        }
        seen = current;
        if ctx.conns.is_empty() {
            continue;
        }
        let closed = ctx.conns.recheck(&seen);
        if closed > 0 {
            info!(
                core = ctx.id,
                closed,
                open = ctx.conns.len(),
                "policy change: closing connections the new policies deny"
            );
        }
    }
}

/// Gives a core's memory back after a burst, once per [`TRIM_PERIOD`]: copy buffers no
/// connection took during the period are freed, the connection table gives back spare room,
/// and when the buffers freed something, or the core has just become idle
/// ([`CoreCtx::is_idle`]), the allocator returns this thread's free pages to the kernel.
/// Without it a node keeps the resident memory of its biggest burst for good: in the buffer
/// pool, in its maps, and in the allocator's pages of an idle thread.
#[derive(Debug, Default)]
struct MemoryKeeper {
    ticks: u32,
    busy: bool,
}

/// How often a core trims its buffer pool and, if that or going idle calls for it, its heap.
const TRIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

impl MemoryKeeper {
    fn tick(&mut self, ctx: &CoreCtx) {
        if !ctx.is_idle() {
            self.busy = true;
        }
        self.ticks += 1;
        if DRAIN_WATCH * self.ticks < TRIM_PERIOD {
            return;
        }
        self.ticks = 0;
        ctx.conns.shrink();
        let freed = ctx.buffers.trim();
        if ctx.is_idle() {
            // Thorough: an idle thread will not allocate again soon, and only a forced collect
            // returns pages whose purge mimalloc delays until the thread's next allocation.
            // The buffers the last connections gave back are trimmed a period after the core
            // went idle, so that tick collects too.
            if std::mem::take(&mut self.busy) || freed > 0 {
                crate::sys::alloc::collect_thread_heap(true);
            }
        } else if freed > 0 {
            crate::sys::alloc::collect_thread_heap(false);
        }
    }
}

async fn accept_loop(ctx: Rc<CoreCtx>, listener: TcpListener, kind: ListenerKind) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            () = ctx.draining.wait() => {
                // Dropping the listener closes it: the kernel refuses what arrives next.
                drop(listener);
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                // Proxied bytes are forwarded as they arrive: Nagle on either leg would add a
                // round trip of latency to every small write the application already sent.
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                match kind {
                    ListenerKind::Outbound => {
                        monoio::spawn(crate::proxy::outbound::serve(ctx, stream, peer))
                    }
                    ListenerKind::InboundPlaintext => {
                        monoio::spawn(crate::proxy::inbound_passthrough::serve(ctx, stream, peer))
                    }
                    ListenerKind::Inbound => {
                        monoio::spawn(crate::proxy::inbound::serve(ctx, stream, peer))
                    }
                };
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on the error.
                error!(core = ctx.id, listener = kind.name(), "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
