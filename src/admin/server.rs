//! The accept loops of the admin (TCP and Unix socket), metrics and readiness servers, on the
//! `zring-admin` thread's own tokio runtime ([`spawn`]), never on the control thread.
//!
//! Why a thread of their own: scrapes, probes and dumps are served by whoever asks, as often as
//! they like (15020 and 15021 listen on every node address). On the control thread a scrape
//! flood would delay xDS and certificate renewal; here it costs only this thread's time.
//!
//! Bounds, per server: at most [`MAX_CONNECTIONS`] connections at once (one more is closed at
//! accept and counted in `zring_admin_connections_refused_total{server}`); request headers
//! within `HEADER_TIMEOUT`; a connection lives at most [`CONNECTION_LIFETIME`], so a slow reader
//! or a keep-alive client cannot hold a slot for good. Bodies are never read.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::{AdminError, HEADER_TIMEOUT, Listeners, Server, State, handle, refuse_write};
use crate::metrics::{Collect, Encoder, Type};

/// Connections one server holds at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest any one connection is served (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

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

    pub(super) fn refused_write(&self) {
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collect for AdminMetrics {
    fn collect(&self, e: &mut Encoder) {
        e.family(
            "zring_admin_connections_refused_total",
            Type::Counter,
            "Connections to the admin, metrics or readiness servers closed at accept: the server held its maximum",
        );
        for door in Door::ALL {
            e.sample(
                "zring_admin_connections_refused_total",
                [("server", door.name())],
                self.refused_connections[door.index()].load(Ordering::Relaxed),
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
    for (server, socket) in sockets {
        match TcpListener::from_std(socket) {
            Ok(l) => {
                let writes = server == Server::Admin && tcp_writes;
                loops.spawn(tcp_loop(server, l, writes, state.clone()));
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

async fn tcp_loop(server: Server, listener: TcpListener, writes: bool, state: State) {
    if let Ok(addr) = listener.local_addr() {
        info!(server = server.name(), %addr, writes, "listening");
    }
    let door = Door::Tcp(server);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.admin_metrics.refused_connections[door.index()].fetch_add(1, Ordering::Relaxed);
            debug!(server = server.name(), %peer, "connection refused: server full");
            continue;
        };
        let state = state.clone();
        tokio::task::spawn(async move {
            connection(door, writes, TokioIo::new(stream), state).await;
            drop(slot);
        });
    }
}

async fn unix_loop(listener: UnixListener, state: State) {
    let door = Door::Socket;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.admin_metrics.refused_connections[door.index()].fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let state = state.clone();
        tokio::task::spawn(async move {
            connection(door, true, TokioIo::new(stream), state).await;
            drop(slot);
        });
    }
}

/// Serves one HTTP/1 connection, within [`CONNECTION_LIFETIME`]; wakes the shutdown once a
/// `/quitquitquit` on it has been answered.
async fn connection<I>(door: Door, writes: bool, io: I, state: State)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let server = match door {
        Door::Tcp(s) => s,
        Door::Socket => Server::Admin,
    };
    let quit = Arc::new(AtomicBool::new(false));
    let shutdown = state.shutdown.clone();
    let service = {
        let quit = quit.clone();
        service_fn(move |req| {
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
                None => handle(server, &state, &quit, req),
            };
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    match tokio::time::timeout(CONNECTION_LIFETIME, served).await {
        Ok(Err(e)) => debug!(server = door.name(), "HTTP connection: {e}"),
        Ok(Ok(())) => {}
        Err(_) => debug!(
            server = door.name(),
            "HTTP connection closed: lifetime reached"
        ),
    }
    if quit.load(Ordering::Acquire) {
        shutdown.notify_one();
    }
}
