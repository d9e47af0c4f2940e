//! How cores run: one pinned OS thread per core, each running its own monoio runtime that owns
//! its listeners (SO_REUSEPORT), buffers and connection tasks. What a core holds is `core`.
//!
//! Threads: `spawn_with_pods` starts the core threads held at a start gate (nothing bound);
//! `Gated::open`, called once the first complete configuration is in, lets them bind and
//! returns once every core has bound its listeners (or the first core failed). `start` does
//! both at once. Everything inside `run_core` is `!Send` by
//! construction: the [`CoreCtx`] lives in an `Rc` and is never shared with another thread.
//! The only cross-thread inputs are the [`Shared`] handles published by the control thread.
//!
//! Faults: every connection task is spawned through `task::spawn` (a panic ends that task
//! only); each core's housekeeping beats into `Shared::health` every tick, and its thread holds
//! a guard that marks the core dead however the thread ends, which readiness and liveness read.
//! `faults` applies the test-only fault hook (`ZRING_TEST_FAULTS`) in the accept loop.

mod faults;
pub mod pods;
pub(crate) mod uring;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{DriverChoice, ProxyMode};
use crate::core::{CoreCtx, Driver, Fault, Shared};
use crate::proxy::{self, Capture};
use crate::sys::socket::{self, ListenOpts};

/// How often a core's `housekeeping` runs: it notices a started drain, a new snapshot (policy
/// re-check) and, once a second (`TRIM_PERIOD`), trims its memory. A drain or a policy change
/// reaches the core's connections within one tick.
pub const HOUSEKEEPING_TICK: Duration = Duration::from_millis(100);

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
    start_with_pods(shared, driver, Vec::new())
}

/// [`start`], each core also taking in-pod mail from its `inboxes[core]` (in-pod mode).
pub fn start_with_pods(
    shared: Arc<Shared>,
    driver: Driver,
    inboxes: Vec<crate::inpod::handoff::Inbox>,
) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    spawn_with_pods(shared, driver, inboxes)?.open()
}

/// Core threads started and held at their start gate: no runtime built, no listener bound.
/// [`Gated::open`] lets them bind and serve; dropping it unopened makes them exit unbound.
///
/// Why bind only then: listeners share their ports (SO_REUSEPORT), and the kernel hands a
/// bound listener its share of new connections at once, accepted or not; a process beside an
/// old one (a rolling update) must not take connections before it holds the policies.
#[derive(Debug)]
pub struct Gated {
    handles: Vec<std::thread::JoinHandle<()>>,
    gate: crossbeam_channel::Sender<()>,
    ready: crossbeam_channel::Receiver<Result<usize, StartError>>,
}

/// Spawns `config.cores` core threads, each waiting at the gate before it builds its runtime
/// and binds its listeners; with `inboxes`, each core also takes in-pod mail.
pub fn spawn_with_pods(
    shared: Arc<Shared>,
    driver: Driver,
    inboxes: Vec<crate::inpod::handoff::Inbox>,
) -> Result<Gated, StartError> {
    let cores = shared.config.cores;
    let mut inboxes = inboxes.into_iter();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<usize, StartError>>(cores);
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(cores);
    let mut handles = Vec::with_capacity(cores);
    for id in 0..cores {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let gate = gate_rx.clone();
        let inbox = inboxes.next();
        let pin = shared.config.pin_cores.then_some(id % cpus);
        let h = std::thread::Builder::new()
            .name(format!("zring-core-{id}"))
            .spawn(move || {
                // Closed without a token: start-up was abandoned, bind nothing.
                if gate.recv().is_err() {
                    return;
                }
                if let Some(cpu) = pin
                    && let Err(e) = monoio::utils::bind_to_cpu_set([cpu])
                {
                    warn!(core = id, cpu, "cannot pin core thread: {e:?}");
                }
                // Marks the core dead however its thread ends (a panic unwinding it included):
                // readiness and liveness fail at once.
                let watched = shared.clone();
                let _alive = watched.health.alive(id);
                run_core(id, driver, shared, ready, inbox);
            })
            .map_err(StartError::Thread)?;
        handles.push(h);
    }
    Ok(Gated {
        handles,
        gate: gate_tx,
        ready: ready_rx,
    })
}

impl Gated {
    /// Lets every core bind its listeners and serve; returns once each has bound, or with the
    /// first core's failure. Blocks the calling thread meanwhile (milliseconds).
    pub fn open(self) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
        let Gated {
            handles,
            gate,
            ready,
        } = self;
        for _ in 0..handles.len() {
            // A core that already exited (it cannot) would only leave its token unread.
            let _ = gate.send(());
        }
        for _ in 0..handles.len() {
            match ready.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StartError::Died { core: usize::MAX }),
            }
        }
        Ok(handles)
    }
}

fn run_core(
    id: usize,
    driver: Driver,
    shared: Arc<Shared>,
    ready: crossbeam_channel::Sender<Result<usize, StartError>>,
    inbox: Option<crate::inpod::handoff::Inbox>,
) {
    let (entries, setup) = (shared.config.uring_entries, shared.config.uring_setup);
    let fut = core_main(id, driver, shared, ready.clone(), inbox);
    let built = match driver {
        Driver::Uring => uring::runtime(id, entries, setup).map(|mut rt| rt.block_on(fut)),
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
    inbox: Option<crate::inpod::handoff::Inbox>,
) {
    let cfg = shared.config.clone();
    let ctx = Rc::new(CoreCtx::new(id, driver, shared));
    let opts = ListenOpts {
        transparent: true,
        reuse_port: true,
        backlog: cfg.listen_backlog,
    };
    let mut listeners = Vec::new();
    // In-pod mode listens inside each enrolled pod (`pods`), never in the node's netns.
    // Node mode: each on IPv6 too where the kernel has it and `IPV6_ENABLED` allows
    // (`capture::dual_stack`).
    let node_listeners = match cfg.proxy_mode {
        ProxyMode::Node => [
            (ListenerKind::Outbound, cfg.outbound_addr),
            (ListenerKind::InboundPlaintext, cfg.inbound_plaintext_addr),
            (ListenerKind::Inbound, cfg.inbound_addr),
        ]
        .into_iter()
        .flat_map(|(kind, addr)| {
            crate::capture::dual_stack(addr, cfg.ipv6_enabled)
                .into_iter()
                .map(move |a| (kind, a))
        })
        .collect(),
        ProxyMode::Shared => Vec::new(),
    };
    for (kind, addr) in node_listeners {
        match socket::listener(addr, opts)
            .and_then(nodelay_listener)
            .and_then(TcpListener::from_std)
        {
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
    // The DNS proxy (15053): its state on every core; in node mode its sockets here, in-pod
    // inside each pod (`pods`).
    let dns = cfg
        .dns
        .enabled
        .then(|| Rc::new(crate::dns::CoreDns::new(&ctx)));
    let mut node_dns = Vec::new();
    if let (Some(_), ProxyMode::Node) = (&dns, cfg.proxy_mode) {
        for addr in crate::capture::dual_stack(cfg.dns.bind_addr(false), cfg.ipv6_enabled) {
            match crate::inpod::factory::dns_sockets(
                addr,
                cfg.listen_backlog,
                cfg.packet_mark,
                true,
            ) {
                Ok(s) => node_dns.push(s),
                Err(source) => {
                    let _ = ready.send(Err(StartError::Listen {
                        core: id,
                        addr,
                        kind: "dns",
                        source,
                    }));
                    return;
                }
            }
        }
    }
    match cfg.proxy_mode {
        ProxyMode::Node => info!(
            core = id,
            driver = driver.name(),
            "core listening on 15001 (outbound), 15006 (inbound plaintext), 15008 (inbound HBONE), IPv4 and, where the node has it, IPv6"
        ),
        ProxyMode::Shared => info!(
            core = id,
            driver = driver.name(),
            "core up, in-pod mode: listening inside each pod istio-cni hands over"
        ),
    }
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
    if let Some(dns) = &dns {
        for sockets in node_dns {
            tasks.extend(crate::dns::server::spawn_node(&ctx, dns, sockets));
        }
    }
    if let Some(inbox) = inbox {
        tasks.push(monoio::spawn(pods::run(ctx.clone(), inbox, dns.clone())));
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

/// Watches what the control thread publishes, every [`HOUSEKEEPING_TICK`]: a new snapshot makes
/// the core re-decide the registered connections the change can affect (`rbac::ChangeFeed`)
/// and close those the new policies deny (a
/// pointer comparison when nothing changed); a started drain fires the core's drain latch
/// (`draining`). Each tick also gives the [`MemoryKeeper`] its turn.
async fn housekeeping(ctx: Rc<CoreCtx>) {
    let mut seen = ctx.shared.snapshot.load_full();
    let mut memory = MemoryKeeper::default();
    loop {
        ctx.shared.health.beat(ctx.id);
        monoio::time::sleep(HOUSEKEEPING_TICK).await;
        memory.tick(&ctx);
        if ctx.shared.drain.started() && !ctx.draining.is_fired() {
            info!(
                core = ctx.id,
                open = ctx.active.get(),
                "draining: closing listeners, GOAWAY to HBONE clients"
            );
            ctx.draining.fire(());
        }
        let current = ctx.shared.snapshot.load_full();
        if Arc::ptr_eq(&current, &seen) {
            continue;
        }
        let previous = std::mem::replace(&mut seen, current);
        if ctx.conns.is_empty() {
            continue;
        }
        let changed = ctx.shared.policy_changes.since(&previous, &seen);
        let pass = ctx.conns.recheck_changes(&seen, &changed);
        ctx.metrics.policy_rechecked(pass.visited, pass.closed);
        if pass.closed > 0 {
            info!(
                core = ctx.id,
                closed = pass.closed,
                visited = pass.visited,
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
        if HOUSEKEEPING_TICK * self.ticks < TRIM_PERIOD {
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

/// Sets TCP_NODELAY on a listener: Linux copies it into every socket the listener accepts, so
/// accepted connections need no setsockopt of their own (one system call fewer per
/// connection). Proxied bytes are forwarded as they arrive: Nagle on either leg would add a
/// round trip of latency to every small write the application already sent.
fn nodelay_listener(l: std::net::TcpListener) -> io::Result<std::net::TcpListener> {
    socket2::SockRef::from(&l).set_nodelay(true)?;
    Ok(l)
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
                // TCP_NODELAY comes from the listener (`nodelay_listener`).
                let fault = if ctx.shared.faults.is_empty() {
                    Fault::None
                } else {
                    // TPROXY keeps the original destination as the local address.
                    let port = stream.local_addr().map_or(0, |a| a.port());
                    faults::on_accept(&ctx, port)
                };
                let ctx = ctx.clone();
                let node = Capture::Node;
                // Contained: a panic in one connection's task ends that connection only.
                match kind {
                    ListenerKind::Outbound => faults::spawn(
                        fault,
                        "outbound",
                        proxy::outbound::serve(ctx, node, stream, peer),
                    ),
                    ListenerKind::InboundPlaintext => faults::spawn(
                        fault,
                        "inbound_plaintext",
                        proxy::inbound_passthrough::serve(ctx, node, stream, peer),
                    ),
                    ListenerKind::Inbound => faults::spawn(
                        fault,
                        "inbound",
                        proxy::inbound::serve(ctx, node, stream, peer),
                    ),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted sockets inherit TCP_NODELAY from the listener, which is why the accept loop
    /// no longer sets it per connection.
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let opts = ListenOpts {
            transparent: false,
            reuse_port: false,
            backlog: 16,
        };
        let l = socket::listener("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        let l = nodelay_listener(l).unwrap();
        l.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY inherited from the listener"
        );
    }
}
