//! The HTTP servers operators and Kubernetes talk to, on their own thread (`zring-admin`, a
//! small tokio runtime of its own: `server`), never on the control thread:
//!
//! | address          | paths |
//! |------------------|-------|
//! | 127.0.0.1:15000  | `/` index, `/config_dump`, `/logging`, `/quitquitquit` (admin, loopback only; read-only in node mode) |
//! | admin socket     | the same, mutating requests included (`ZRING_ADMIN_SOCKET`, mode 0600: `socket`) |
//! | 0.0.0.0:15020    | `/metrics`, `/stats/prometheus` (Prometheus text format) |
//! | 0.0.0.0:15021    | `/healthz/ready` (503 until ready, then 200), `/healthz/live` (503 once a core or the control thread died or stalled) |
//!
//! Threads: `Listeners::bind` runs on the main thread before the cores start, so a port another
//! program holds fails start-up with a clear error (the sockets share their ports with
//! SO_REUSEPORT, as the cores' do: a rolling update on a host-network node starts the new zring
//! beside the old one, and the new one must come up, answer 503 and wait for its configuration);
//! `server::spawn` serves them on the `zring-admin` thread, so a flood of scrapes or probes
//! cannot delay xDS or certificates, and each server is bounded without letting a flood keep
//! probes and scrapes out (`server`'s module doc; `slots`, `scrape`). Nothing
//! here runs on a core: a scrape reads the cores' shards through `metrics::Registry`, the dump
//! reads the published snapshot and certificate store, the probes read `core::Health`.
//!
//! Invariants: the admin listener is bound to loopback, and a connection from any other
//! address is closed unanswered all the same (defence in depth). In node mode the host's
//! loopback is shared with every host-network process, so there the TCP admin listener refuses
//! mutating requests (403, counted): `/quitquitquit` and `/logging` changes go through the
//! admin socket (`ZRING_ADMIN_TCP_WRITES` decides; shared mode allows them on TCP, whose
//! loopback is the pod's own). `/quitquitquit` answers, closes its connection, and only then
//! wakes [`State::shutdown`], so the caller always gets its answer. Request heads must arrive
//! within their server's [`Limits::head_timeout`]; bodies are never read.

pub mod client;
pub mod config_dump;
mod scrape;
mod server;
mod slots;
mod socket;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::sync::Notify;
use tracing::info;

use crate::config::Config;
use crate::core::Shared;
use crate::identity::{CertStore, Identity};
use crate::logging::LogControl;
use crate::metrics::{Collect, Encoder, Type};
use crate::xds::client::InitialSync;

pub use scrape::{CROWDED, REUSE_FOR, Rendering};
pub use server::{AdminMetrics, CONNECTION_LIFETIME, MAX_CONNECTIONS, serve, spawn};
pub use slots::{Expiry, Limits, Reclaim};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: io::Error,
    },
    #[error("admin socket {path} (ZRING_ADMIN_SOCKET; off to disable): {what}: {source}")]
    Socket {
        path: PathBuf,
        what: String,
        source: io::Error,
    },
    #[error("cannot start the admin thread: {0}")]
    Thread(io::Error),
}

/// Which server a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    Admin,
    Stats,
    Readiness,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Admin => "admin",
            Server::Stats => "metrics",
            Server::Readiness => "readiness",
        }
    }
}

/// The listening sockets, bound and not yet served.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<(Server, std::net::TcpListener, Limits)>,
    /// The admin socket and its path.
    unix: Option<(PathBuf, std::os::unix::net::UnixListener)>,
    /// Whether the TCP admin listener takes mutating requests.
    tcp_writes: bool,
}

impl Listeners {
    /// Binds the admin, metrics and readiness addresses of `config`, and its admin socket.
    pub fn bind(config: &Config) -> Result<Listeners, AdminError> {
        let mut l = Listeners::bind_addrs([
            (Server::Admin, config.admin_addr),
            (Server::Stats, config.stats_addr),
            (Server::Readiness, config.readiness_addr),
        ])?
        .tcp_writes(config.ops.admin_tcp_writes);
        if let Some(path) = &config.ops.admin_socket {
            l = l.with_socket(path)?;
        }
        Ok(l)
    }

    /// Binds any set of servers (tests use ephemeral ports); no admin socket, and the TCP admin
    /// listener takes mutating requests until [`tcp_writes`](Self::tcp_writes) says otherwise.
    pub fn bind_addrs(
        addrs: impl IntoIterator<Item = (Server, SocketAddr)>,
    ) -> Result<Listeners, AdminError> {
        let mut sockets = Vec::new();
        for (server, addr) in addrs {
            let bind = || -> io::Result<std::net::TcpListener> {
                use socket2::{Domain, Socket, Type};
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                s.set_reuse_address(true)?;
                s.set_reuse_port(true)?;
                s.bind(&addr.into())?;
                s.listen(1024)?;
                s.set_nonblocking(true)?;
                Ok(s.into())
            };
            let l = bind().map_err(|source| AdminError::Bind {
                addr,
                what: server.name(),
                source,
            })?;
            sockets.push((server, l, Limits::of(server)));
        }
        Ok(Listeners {
            sockets,
            unix: None,
            tcp_writes: true,
        })
    }

    /// Also serves the admin API on a Unix socket at `path` (mode 0600).
    pub fn with_socket(mut self, path: &std::path::Path) -> Result<Listeners, AdminError> {
        self.unix = Some((path.to_owned(), socket::bind(path)?));
        Ok(self)
    }

    /// Whether the TCP admin listener takes mutating requests (else 403).
    pub fn tcp_writes(mut self, allowed: bool) -> Listeners {
        self.tcp_writes = allowed;
        self
    }

    /// Other bounds than [`Limits::of`] for `server`'s TCP listener (tests).
    pub fn limits(mut self, server: Server, limits: Limits) -> Listeners {
        for (s, _, l) in &mut self.sockets {
            if *s == server {
                *l = limits;
            }
        }
        self
    }

    /// Where each server actually listens (the port, when bound to port 0).
    pub fn addrs(&self) -> Vec<(Server, SocketAddr)> {
        self.sockets
            .iter()
            .filter_map(|(s, l, _)| l.local_addr().ok().map(|a| (*s, a)))
            .collect()
    }
}

/// Whether this node may receive traffic: its cores listen and its config has arrived.
#[derive(Debug)]
pub struct Readiness {
    cores: AtomicBool,
    xds: Arc<InitialSync>,
    /// In-pod mode: the ZDS client's metrics, whose `ready` says the node agent's snapshot was
    /// acknowledged.
    inpod: std::sync::OnceLock<Arc<crate::inpod::Metrics>>,
    /// Latched once the agent's snapshot was first acknowledged: an agent restart later does
    /// not make the node unready (its pods stay served meanwhile), as in ztunnel.
    inpod_synced: AtomicBool,
    /// Node mode: the capture watch's verdict (`capture::watch`); not latched.
    capture: std::sync::OnceLock<Arc<crate::metrics::CaptureSetMetrics>>,
}

impl Readiness {
    pub fn new(xds: Arc<InitialSync>) -> Readiness {
        Readiness {
            cores: AtomicBool::new(false),
            xds,
            inpod: std::sync::OnceLock::new(),
            inpod_synced: AtomicBool::new(false),
            capture: std::sync::OnceLock::new(),
        }
    }

    /// Node mode: not ready while the capture watch finds the ruleset missing or altered.
    pub fn watch_capture(&self, metrics: Arc<crate::metrics::CaptureSetMetrics>) {
        let _ = self.capture.set(metrics);
    }

    /// In-pod mode: not ready until the node agent's snapshot is acknowledged.
    pub fn watch_inpod(&self, metrics: Arc<crate::inpod::Metrics>) {
        let _ = self.inpod.set(metrics);
    }

    /// Every core has bound its listeners.
    pub fn cores_started(&self) {
        self.cores.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else what is still awaited.
    pub fn check(&self) -> Result<(), &'static str> {
        // The configuration first: the cores start only once it is complete.
        if !self.xds.is_done() {
            return Err("waiting for the initial configuration from istiod");
        }
        if !self.cores.load(Ordering::Acquire) {
            return Err("the proxy cores have not started");
        }
        if let Some(inpod) = self.inpod.get()
            && !self.inpod_synced.load(Ordering::Acquire)
        {
            if !inpod.is_ready() {
                return Err("waiting for the pod snapshot from istio-cni's node agent (INPOD_UDS)");
            }
            self.inpod_synced.store(true, Ordering::Release);
        }
        if let Some(capture) = self.capture.get()
            && !capture.intact()
        {
            return Err(
                "node capture (nftables table ip zring or its policy route) is missing or altered",
            );
        }
        Ok(())
    }
}

/// The latest certificate failure of each identity, for the dump's `Unavailable` state. Written
/// by the control thread's certificate loop after every sync.
#[derive(Debug, Default)]
pub struct CertFailures {
    failed: Mutex<BTreeMap<Identity, String>>,
}

impl CertFailures {
    /// Forgets identities that now have a certificate, then records this sync's failures.
    pub fn record(&self, store: &CertStore, failed: &[(Identity, crate::identity::Error)]) {
        let mut map = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, _| store.get(id).is_none());
        for (id, e) in failed {
            map.insert(id.clone(), e.to_string());
        }
    }

    pub fn snapshot(&self) -> BTreeMap<Identity, String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the handlers read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct State {
    pub shared: Arc<Shared>,
    pub readiness: Arc<Readiness>,
    /// `None` when logging was not set up by `logging::init` (library use, tests).
    pub logs: Option<LogControl>,
    pub cert_failures: Arc<CertFailures>,
    /// Woken once `/quitquitquit` has answered; the control thread then returns.
    pub shutdown: Arc<Notify>,
    /// The servers' own counters (refused connections and writes).
    pub admin_metrics: Arc<AdminMetrics>,
}

impl State {
    /// Reports the admin servers' counters, contained task panics and unhealthy cores in the
    /// metrics from now on.
    pub fn watch_metrics(&self) {
        let m = &self.shared.metrics;
        m.watch(self.admin_metrics.clone());
        m.watch(Arc::new(HealthSeries(self.shared.clone())));
    }
}

/// `zring_task_panics_total` and `zring_cores_unhealthy`, read at scrape time.
#[derive(Debug)]
struct HealthSeries(Arc<Shared>);

impl Collect for HealthSeries {
    fn collect(&self, e: &mut Encoder) {
        e.family(
            "zring_task_panics_total",
            Type::Counter,
            "Connection tasks that panicked; each ended its own connection only",
        );
        e.sample("zring_task_panics_total", [], crate::task::panics());
        e.family(
            "zring_cores_unhealthy",
            Type::Gauge,
            "Cores whose thread exited or whose loop stopped turning (the process is then unready and not live)",
        );
        e.sample(
            "zring_cores_unhealthy",
            [],
            self.0.health.unhealthy_cores() as u64,
        );
    }
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_type(mut r: Answer, content_type: &'static str) -> Answer {
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// The answer to a mutating request on a listener that takes none: the admin server's methods
/// other than GET and HEAD, on TCP where `writes` is off. `None`: serve it.
pub fn refuse_write<B>(server: Server, writes: bool, req: &Request<B>) -> Option<Answer> {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    (server == Server::Admin && !writes && !reads).then(|| {
        text(
            StatusCode::FORBIDDEN,
            "forbidden: this listener is read-only (node mode shares the host's loopback); \
             send mutating requests to the admin socket: zring admin POST <path>\n",
        )
    })
}

/// Answers one request; `metrics` renders (or reuses) the scrape. Never reads the body.
pub fn handle<B>(
    server: Server,
    state: &State,
    quit: &AtomicBool,
    metrics: &dyn Fn() -> Bytes,
    req: Request<B>,
) -> Answer {
    let path = req.uri().path();
    match (server, path) {
        (Server::Stats, "/metrics" | "/stats/prometheus") => with_type(
            text(StatusCode::OK, metrics()),
            crate::metrics::text::CONTENT_TYPE,
        ),
        (Server::Readiness, "/healthz/ready") => {
            let ready = state.readiness.check().map_err(String::from);
            match ready.and_then(|()| state.shared.health.check()) {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            }
        }
        // Liveness judges only what a restart would cure: a dead or stalled core or control
        // thread. Waiting for the configuration is not a reason to restart. Also on the admin
        // server, so the DaemonSets probe it through the admin socket (`zring admin GET
        // /healthz/live`), which no flood of 15021 from the network can make fail.
        (Server::Readiness | Server::Admin, "/healthz/live") => match state.shared.health.check() {
            Ok(()) => text(StatusCode::OK, "live\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not live: {why}\n"),
            ),
        },
        (Server::Admin, "/") => with_type(text(StatusCode::OK, INDEX), "text/html; charset=utf-8"),
        (Server::Admin, "/config_dump") => {
            let dump = config_dump::build(
                &state.shared,
                &state.cert_failures.snapshot(),
                std::time::SystemTime::now(),
            );
            match serde_json::to_string_pretty(&dump) {
                Ok(json) => with_type(text(StatusCode::OK, json), "application/json"),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the dump: {e}\n"),
                ),
            }
        }
        (Server::Admin, "/logging") => logging(state, req.method(), req.uri().query()),
        (Server::Admin, "/quitquitquit") => {
            if req.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            }
            info!("shutdown requested on /quitquitquit");
            quit.store(true, Ordering::Release);
            let mut r = text(StatusCode::OK, "shutdown now\n");
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

const INDEX: &str = "<!DOCTYPE html>
<html><head><title>zring admin</title></head><body>
<h1>zring admin</h1>
<table>
<tr><td><a href=\"config_dump\">config_dump</a></td><td>dump the current configuration (workloads, services, policies, certificates)</td></tr>
<tr><td><a href=\"logging\">logging</a></td><td>show (GET) or change (POST ?level=) the log levels</td></tr>
<tr><td>quitquitquit</td><td>shut the process down (POST)</td></tr>
<tr><td><a href=\"healthz/live\">healthz/live</a></td><td>liveness: 503 once a core or the control thread died or stalled</td></tr>
</table>
<p>Metrics: <code>:15020/metrics</code>, <code>:15020/stats/prometheus</code>. Readiness: <code>:15021/healthz/ready</code>, liveness: <code>:15021/healthz/live</code>.</p>
<p>In node mode this listener is read-only: POST through the admin socket (<code>zring admin POST /quitquitquit</code>).</p>
</body></html>
";

const LOGGING_HELP: &str = "usage: GET /logging                       show the current level
usage: POST /logging?level=<level>          change the default level
usage: POST /logging?level=<target>=<level>[,...]  change some targets' levels (e.g. access=debug)
usage: POST /logging?reset[&level=...]      back to the start-up level (then apply level)
levels: off error warn info debug trace
";

fn logging(state: &State, method: &Method, query: Option<&str>) -> Answer {
    let Some(logs) = &state.logs else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "logging is not under this server's control\n",
        );
    };
    let current = |s: String| text(StatusCode::OK, format!("current log level is {s}\n"));
    match *method {
        Method::GET => current(logs.current()),
        Method::POST => {
            let params = query_params(query.unwrap_or(""));
            let level = params.get("level").cloned();
            let reset = params.contains_key("reset");
            if level.is_none() && !reset {
                return current(logs.current());
            }
            match logs.set(level.as_deref().unwrap_or(""), reset) {
                Ok(now) => {
                    info!(level = %now, "log level changed");
                    current(now)
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n{LOGGING_HELP}")),
            }
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("use GET or POST\n{LOGGING_HELP}"),
        ),
    }
}

/// `a=1&b=x%3Dy&c` → {a: "1", b: "x=y", c: ""}; `+` is a space. Later keys win.
pub fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
