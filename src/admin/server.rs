//! The accept loops of the admin (TCP and Unix socket), metrics and readiness servers, on the
//! `zring-admin` thread's own tokio runtime ([`spawn`]), never on the control thread.
//!
//! Why a thread of their own: scrapes, probes and dumps are served by whoever asks, as often as
//! they like (15020 and 15021 listen on every node address). On the control thread a scrape
//! flood would delay xDS and certificate renewal; here it costs only this thread's time.
//!
//! Bounds, per server (`slots::Limits::of`): at most [`MAX_CONNECTIONS`] connections at once;
//! a request head within 2 s (readiness), 5 s (metrics) or 10 s (admin) of the accept; 10 s
//! (readiness) or 30 s idle between kept-alive requests; [`CONNECTION_LIFETIME`] in all. A new
//! connection at the cap takes the slot of the held connection that has waited longest without
//! delivering a request head (or idle between requests, or leaving its answer unread beyond 2
//! s), counted in `zring_admin_connections_evicted_total{server,reason}`; only when every slot
//! is being answered is the newcomer closed at accept
//! (`zring_admin_connections_refused_total{server}`). So slowloris connections and idle ones
//! cannot keep a probe or a scrape out, even from the probe's own source address (`slots`).
//! Deadlines count in `zring_admin_connections_timed_out_total{server,reason}`. Scrapes of a
//! crowded metrics server share one rendering per second (`scrape`). Every connection is a task
//! of its own, so one client's requests wait only for each other. Bodies are never read.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tracing::{debug, info, warn};

use super::scrape::{Rendering, Scrapes};
use super::slots::{Admit, Closed, Expiry, Held, Limits, Reclaim, Slot, Table, Tracked};
use super::{AdminError, Listeners, Server, State, handle, refuse_write};
use crate::metrics::{Collect, Encoder, Type};

pub use super::slots::{CONNECTION_LIFETIME, MAX_CONNECTIONS};

/// Where a connection came in, which decides whether it may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Tcp(Server),
    /// The admin Unix socket: every admin endpoint, mutating ones included.
    Socket,
}

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Tcp(s) => s.name(),
            Door::Socket => "admin_socket",
        }
    }

    fn index(self) -> usize {
        match self {
            Door::Tcp(Server::Admin) => 0,
            Door::Tcp(Server::Stats) => 1,
            Door::Tcp(Server::Readiness) => 2,
            Door::Socket => 3,
        }
    }

    const ALL: [Door; 4] = [
        Door::Tcp(Server::Admin),
        Door::Tcp(Server::Stats),
        Door::Tcp(Server::Readiness),
        Door::Socket,
    ];
}

/// The admin servers' own counters; written on the admin thread, read by scrapes.
#[derive(Debug, Default)]
pub struct AdminMetrics {
    refused_connections: [AtomicU64; 4],
    /// By door, then by [`Reclaim`].
    evicted: [[AtomicU64; 3]; 4],
    /// By door, then by [`Expiry`].
    timed_out: [[AtomicU64; 3]; 4],
    /// By [`Rendering`].
    scrapes: [AtomicU64; 2],
    refused_writes: AtomicU64,
}

impl AdminMetrics {
    /// Mutating requests refused on the read-only TCP admin listener.
    pub fn refused_writes(&self) -> u64 {
        self.refused_writes.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because their server was full, over all servers.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections closed to give their slot to a newcomer, over all servers, by reason.
    pub fn evicted(&self, why: Reclaim) -> u64 {
        self.evicted
            .iter()
            .map(|c| c[why as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Connections closed at a deadline of their own, over all servers, by deadline.
    pub fn timed_out(&self, which: Expiry) -> u64 {
        self.timed_out
            .iter()
            .map(|c| c[which as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Scrapes answered, by whether the rendering was made for them.
    pub fn scrapes(&self, how: Rendering) -> u64 {
        self.scrapes[how as usize].load(Ordering::Relaxed)
    }

    pub(super) fn refused_write(&self) {
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collect for AdminMetrics {
    fn collect(&self, e: &mut Encoder) {
        e.family(
            "zring_admin_connections_refused_total",
            Type::Counter,
            "Connections to the admin, metrics or readiness servers closed at accept: the server held its maximum, every one being answered",
        );
        for door in Door::ALL {
            e.sample(
                "zring_admin_connections_refused_total",
                [("server", door.name())],
                self.refused_connections[door.index()].load(Ordering::Relaxed),
            );
        }
        e.family(
            "zring_admin_connections_evicted_total",
            Type::Counter,
            "Connections to the admin, metrics or readiness servers closed to give their slot to a new one: without a complete request head (incomplete), idle between requests (idle), or not reading their answer (stalled)",
        );
        for door in Door::ALL {
            for why in Reclaim::ALL {
                e.sample(
                    "zring_admin_connections_evicted_total",
                    [("server", door.name()), ("reason", why.name())],
                    self.evicted[door.index()][why as usize].load(Ordering::Relaxed),
                );
            }
        }
        e.family(
            "zring_admin_connections_timed_out_total",
            Type::Counter,
            "Connections to the admin, metrics or readiness servers closed at a deadline: request head, idle between requests, lifetime",
        );
        for door in Door::ALL {
            for which in Expiry::ALL {
                e.sample(
                    "zring_admin_connections_timed_out_total",
                    [("server", door.name()), ("reason", which.name())],
                    self.timed_out[door.index()][which as usize].load(Ordering::Relaxed),
                );
            }
        }
        e.family(
            "zring_admin_scrapes_total",
            Type::Counter,
            "Scrapes of /metrics answered, by rendering: made for this scrape (fresh), or shared with others while the metrics server was crowded (reused, at most 1 s old)",
        );
        for how in Rendering::ALL {
            e.sample(
                "zring_admin_scrapes_total",
                [("rendering", how.name())],
                self.scrapes[how as usize].load(Ordering::Relaxed),
            );
        }
        e.family(
            "zring_admin_writes_refused_total",
            Type::Counter,
            "Mutating admin requests (POST /quitquitquit, /logging changes) refused on TCP: they are served on the admin socket only",
        );
        e.sample(
            "zring_admin_writes_refused_total",
            [],
            self.refused_writes(),
        );
    }
}

/// Starts the `zring-admin` thread, which serves `listeners` on its own runtime for the rest
/// of the process's life.
pub fn spawn(
    listeners: Listeners,
    state: State,
) -> Result<std::thread::JoinHandle<()>, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Thread)?;
    std::thread::Builder::new()
        .name("zring-admin".into())
        .spawn(move || runtime.block_on(serve(listeners, state)))
        .map_err(AdminError::Thread)
}

/// Serves every listener until the process ends (on the calling runtime; [`spawn`] gives it a
/// thread of its own).
pub async fn serve(listeners: Listeners, state: State) {
    let Listeners {
        sockets,
        unix,
        tcp_writes,
    } = listeners;
    let mut loops = tokio::task::JoinSet::new();
    for (server, socket, limits) in sockets {
        match TcpListener::from_std(socket) {
            Ok(l) => {
                let writes = server == Server::Admin && tcp_writes;
                loops.spawn(tcp_loop(server, l, limits, writes, state.clone()));
            }
            Err(e) => warn!(server = server.name(), "cannot serve: {e}"),
        }
    }
    if let Some((path, socket)) = unix {
        match UnixListener::from_std(socket) {
            Ok(l) => {
                info!(path = %path.display(), "admin socket listening (every admin endpoint)");
                loops.spawn(unix_loop(l, state.clone()));
            }
            Err(e) => warn!(path = %path.display(), "cannot serve the admin socket: {e}"),
        }
    }
    loops.join_all().await;
}

async fn tcp_loop(
    server: Server,
    listener: TcpListener,
    limits: Limits,
    writes: bool,
    state: State,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(server = server.name(), %addr, writes, "listening");
    }
    let door = Door::Tcp(server);
    let table = Table::new(limits);
    let scrapes = Arc::new(Scrapes::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(server = server.name(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if server == Server::Admin && !peer.ip().to_canonical().is_loopback() {
            warn!(%peer, "admin connection from a non-loopback address refused");
            continue;
        }
        let Some(held) = admit(door, &table, &state).await else {
            debug!(server = server.name(), %peer, "connection refused: every slot is answering");
            continue;
        };
        let conn = Conn {
            door,
            writes,
            table: table.clone(),
            scrapes: scrapes.clone(),
            state: state.clone(),
        };
        tokio::task::spawn(conn.serve(stream, held));
    }
}

async fn unix_loop(listener: UnixListener, state: State) {
    let door = Door::Socket;
    let table = Table::new(Limits::of(Server::Admin));
    let scrapes = Arc::new(Scrapes::default());
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(held) = admit(door, &table, &state).await else {
            continue;
        };
        let conn = Conn {
            door,
            writes: true,
            table: table.clone(),
            scrapes: scrapes.clone(),
            state: state.clone(),
        };
        tokio::task::spawn(conn.serve(stream, held));
    }
}

/// A slot for a new connection of `door`'s server, counting what it took; `None`: refused.
async fn admit(door: Door, table: &Arc<Table>, state: &State) -> Option<Held> {
    if table.len() >= table.limits.max_connections {
        // At the cap, let every runnable connection task go first: a young connection whose
        // head has arrived (a probe) gets it read, and so keeps its slot, before a burst of
        // newcomers from the backlog could take it as "incomplete".
        tokio::task::yield_now().await;
    }
    let m = &state.admin_metrics;
    match table.admit(Instant::now()) {
        Admit::Taken(h) => Some(h),
        Admit::Evicted(h, why) => {
            m.evicted[door.index()][why as usize].fetch_add(1, Ordering::Relaxed);
            Some(h)
        }
        Admit::Refused => {
            m.refused_connections[door.index()].fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The largest request head read (hyper's read buffer, at least 8 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// What serving one connection needs.
struct Conn {
    door: Door,
    /// Whether it may take mutating requests.
    writes: bool,
    /// Its server's connections: how crowded the server is, for the metrics renderings.
    table: Arc<Table>,
    scrapes: Arc<Scrapes>,
    state: State,
}

impl Conn {
    /// Serves one HTTP/1 connection until it ends, is evicted or reaches a deadline of its
    /// own; wakes the shutdown once a `/quitquitquit` on it has been answered.
    async fn serve<S>(self, stream: S, held: Held)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            door,
            writes,
            table,
            scrapes,
            state,
        } = self;
        let server = match door {
            Door::Tcp(s) => s,
            Door::Socket => Server::Admin,
        };
        let limits = table.limits;
        let slot = held.slot.clone();
        let quit = Arc::new(AtomicBool::new(false));
        let shutdown = state.shutdown.clone();
        let counters = state.admin_metrics.clone();
        let service = {
            let (quit, slot) = (quit.clone(), slot.clone());
            service_fn(move |req| {
                slot.request(Instant::now());
                let response = match refuse_write(server, writes, &req) {
                    Some(refused) => {
                        state.admin_metrics.refused_write();
                        warn!(
                            method = %req.method(),
                            path = req.uri().path(),
                            "mutating admin request on TCP refused: use the admin socket"
                        );
                        refused
                    }
                    None => {
                        let metrics = || {
                            let registry = &state.shared.metrics;
                            let (body, how) = scrapes.get(table.len(), Instant::now(), || {
                                Bytes::from(registry.scrape())
                            });
                            state.admin_metrics.scrapes[how as usize]
                                .fetch_add(1, Ordering::Relaxed);
                            body
                        };
                        handle(server, &state, &quit, &metrics, req)
                    }
                };
                // The answer is handed over once hyper drops its body: the connection then
                // waits for its next request (and is reclaimable again).
                let response = response.map(|body| Reply {
                    body,
                    _done: Responded(slot.clone()),
                });
                async move { Ok::<_, Infallible>(response) }
            })
        };
        let io = TokioIo::new(Tracked::new(stream, slot.clone()));
        // No hyper timers: the head, idle and lifetime deadlines are the slot's, which also
        // tells a connection when it was evicted.
        let served = hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            // A request head larger than this is refused (431): probes, scrapes and admin
            // requests are a few hundred bytes, and 64 slots then hold at most 1 MiB of heads.
            .max_buf_size(MAX_HEAD)
            .serve_connection(io, service);
        // `served` first: a head that arrived in time is read, even if this task was polled
        // late (the thread rendering for others), before its deadline is judged.
        tokio::select! {
            biased;
            r = served => {
                if let Err(e) = r {
                    debug!(server = door.name(), "HTTP connection: {e}");
                }
            }
            closed = slot.closed(&limits) => match closed {
                // Counted when its slot was taken.
                Closed::Evicted(why) => debug!(server = door.name(), reason = why.name(), "HTTP connection evicted"),
                Closed::Expired(which) => {
                    counters.timed_out[door.index()][which as usize]
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(server = door.name(), deadline = which.name(), "HTTP connection closed: deadline reached");
                }
            },
        }
        drop(held);
        if quit.load(Ordering::Acquire) {
            shutdown.notify_one();
        }
    }
}

/// An answer's body, which tells its slot the answer was handed over when hyper drops it.
struct Reply {
    body: Full<Bytes>,
    _done: Responded,
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    // Forwarded so that hyper sends a Content-Length, as for the bare body.
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Tells a slot its answer was handed over, when dropped with the body.
struct Responded(Arc<Slot>);

impl Drop for Responded {
    fn drop(&mut self) {
        self.0.responded(Instant::now());
    }
}
