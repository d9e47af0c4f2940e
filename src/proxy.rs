//! The data path: what each listener does with an accepted connection.
//!
//! Runs on the cores, one monoio task per connection, straight-line per direction:
//! accept → classify (`route`) → (authorize) → connect → copy → record. Modules:
//! - `outbound`: 15001, connections captured from local pods;
//! - `inbound_passthrough`: 15006, plaintext connections to local pods;
//! - `inbound`: 15008, HBONE tunnels from other nodes to local pods;
//! - `route`: the pure outbound routing decision.
//!
//! Built on `core` (the core's context and connection table), `hbone` (tunnels, pool) and `net`
//! (connect, RST, byte pump); `runtime` spawns the listeners' `serve` tasks.
//!
//! A connection's outcome is recorded exactly once, by [`ConnRecord`]'s `Drop`: one access-log
//! line and the Istio TCP metrics on the core's shard (see `metrics` for the accounting).

pub mod inbound;
pub mod inbound_passthrough;
pub mod outbound;
pub mod route;

use std::cell::{OnceCell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::{info, warn};

use crate::core::CoreCtx;
use crate::core::conns::{KillSwitch, Registration, Subject};
use crate::hbone;
use crate::identity::Identity;
use crate::metrics::labels::{self, NO_FLAGS};
use crate::metrics::{Conn, Flow, LabelsRef, LatencyKind, Meter, Reporter, SecurityPolicy, Series};
use crate::net;
use crate::net::copy::{CopyError, Transferred};
use crate::rbac::{self, Decision};
use crate::state::{Service, Snapshot, Workload};
use crate::sys::socket::{self, SpoofSide};

pub use crate::net::reset;

/// The address of the peer that opened a connection to zring (a pod, or another node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The destination the client asked for, preserved by TPROXY as the accepted socket's local
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrigDst(pub SocketAddr);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for OrigDst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a connection did not complete normally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refused: {0}")]
    Denied(#[from] route::Denied),
    #[error("unknown destination workload {0}")]
    UnknownDestination(IpAddr),
    #[error("destination workload {0} is not on this node")]
    NotLocal(IpAddr),
    #[error(transparent)]
    Connect(#[from] net::Error),
    #[error("cannot read the accepted socket's addresses: {0}")]
    Accept(io::Error),
    #[error("{0}")]
    Copy(#[from] CopyError),
    #[error("HBONE: {0}")]
    Hbone(#[from] hbone::HboneError),
    #[error("workload {0} has no valid SPIFFE identity")]
    NoIdentity(Arc<str>),
    #[error("unauthorized: {0}")]
    Unauthorized(Decision),
    #[error("closed on policy change: {0}")]
    Revoked(Decision),
}

impl Error {
    /// The value of the `response_flags` metric label / access-log field for this outcome.
    pub fn response_flag(&self) -> &'static str {
        match self {
            Error::Denied(_) => "DENY",
            Error::UnknownDestination(_) | Error::NotLocal(_) => "DENY",
            Error::Connect(_) => "CONNECT",
            Error::Hbone(e) => e.response_flag(),
            Error::NoIdentity(_) => "CONNECT",
            Error::Unauthorized(_) | Error::Revoked(_) => "DENY",
            Error::Accept(_) | Error::Copy(_) => "-",
        }
    }
}

/// [`net::connect`], its error as this module's (`return Err(e)` in the listeners).
pub fn connect(
    dst: SocketAddr,
    spoof_source: Option<IpAddr>,
    side: SpoofSide,
    mark: u32,
    timeout: Duration,
) -> impl Future<Output = Result<TcpStream, Error>> {
    let connecting = net::connect(dst, spoof_source, side, mark, timeout);
    async move { Ok(connecting.await?) }
}

/// Authorizes a connection to a local workload (the caller refuses it on `Err`) and, when
/// allowed, registers it with the core's table so that policy changes re-check it. A dry-run
/// policy that would have decided otherwise is logged here.
pub fn authorize<'c>(
    ctx: &'c CoreCtx,
    snapshot: &Snapshot,
    subject: Subject,
    dst_workload: &Workload,
) -> Result<Registration<'c>, Error> {
    let decision = rbac::authorize(&rbac::Connection {
        src_identity: subject.src_identity.as_ref(),
        src_ip: subject.src_ip,
        dst: subject.dst,
        dst_workload,
        snapshot,
    });
    if decision.dry_run_flips() {
        info!(
            core = ctx.id,
            src.addr = %subject.src_ip,
            dst.addr = %subject.dst,
            "dry-run authorization differs: {decision}"
        );
    }
    if !decision.is_allowed() {
        return Err(Error::Unauthorized(decision));
    }
    Ok(ctx.conns.register(subject))
}

/// Runs a connection's pump until it ends, or until a policy change revokes the connection: then
/// the sockets behind `fds` (still open: the pump owns them until this returns) are set to
/// reset on close, so both ends see the connection fail rather than end.
///
/// The caller pins the pump: taken by value, it would sit in this future twice (the argument
/// and its pinned copy), a kilobyte more for every connection's task.
pub async fn until_revoked(
    pump: Pin<&mut impl Future<Output = Result<(), CopyError>>>,
    kill: &KillSwitch,
    fds: &[RawFd],
) -> Result<(), Error> {
    let why = monoio::select! {
        r = pump => return r.map_err(Error::from),
        why = kill.fired() => why,
    };
    for fd in fds {
        let _ = socket::set_reset_on_close(fd);
    }
    Err(Error::Revoked(why))
}

/// Waits (up to the connect timeout) until the published certificates hold one for `id`.
///
/// A workload that just arrived in the snapshot gets its certificate from the control thread a
/// moment later (from the Istio CA: a round trip), and the first connection to or from it may
/// come first. Waiting here, off the fast path (a lookup when the certificate exists), turns
/// that race into a short delay instead of a refused connection. Returns whether it arrived.
pub async fn certificate_ready(ctx: &CoreCtx, id: &Identity) -> bool {
    const POLL: Duration = Duration::from_millis(10);
    if ctx.shared.certs.load().get(id).is_some() {
        return true;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < ctx.config().connect_timeout {
        monoio::time::sleep(POLL).await;
        if ctx.shared.certs.load().get(id).is_some() {
            info!(core = ctx.id, identity = %id, waited = ?start.elapsed(), "certificate arrived");
            return true;
        }
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Everything known about one proxied connection; logs and counts its outcome once, when
/// dropped, whatever path ended it.
///
/// Metrics: [`ConnRecord::established`] (upstream connected) counts the connection opened under
/// its label set and routes its byte counters into that series; `Drop` counts it closed (and
/// failed, on error) under the outcome's `response_flags`, opening it first if it never got
/// that far. The core's open-connections gauge covers the record's whole life.
#[derive(Debug)]
pub struct ConnRecord {
    pub core: usize,
    pub direction: Direction,
    pub start: Instant,
    pub src: ClientAddr,
    pub dst: OrigDst,
    pub src_workload: Option<Arc<Workload>>,
    pub dst_workload: Option<Arc<Workload>>,
    pub dst_service: Option<Arc<Service>>,
    /// Where zring actually connected (the pod, or a peer's 15008), once known.
    pub upstream: Option<SocketAddr>,
    /// The source's identity: the peer certificate's on inbound HBONE, the source workload's
    /// when zring presents its certificate on outbound HBONE. Set only on HBONE paths, so it
    /// also tells that the connection is mutual TLS.
    pub src_identity: Option<Identity>,
    /// The identity the destination proved (outbound HBONE) or that we presented (inbound).
    pub dst_identity: Option<Identity>,
    pub counts: Transferred,
    pub error: RefCell<Option<Error>>,
    /// The core's context: its metrics shard, and the snapshot for the inbound service guess.
    ctx: Rc<CoreCtx>,
    /// The series the connection was opened under (`response_flags="-"`), once it is.
    opened: OnceCell<Rc<Series>>,
}

impl ConnRecord {
    pub fn new(
        ctx: &Rc<CoreCtx>,
        direction: Direction,
        src: ClientAddr,
        dst: OrigDst,
    ) -> ConnRecord {
        ctx.metrics.connection_started();
        ConnRecord {
            core: ctx.id,
            direction,
            start: Instant::now(),
            src,
            dst,
            src_workload: None,
            dst_workload: None,
            dst_service: None,
            upstream: None,
            src_identity: None,
            dst_identity: None,
            counts: Transferred::default(),
            error: RefCell::new(None),
            ctx: ctx.clone(),
            opened: OnceCell::new(),
        }
    }

    /// Records the outcome; the first error wins.
    pub fn fail(&self, e: Error) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// The upstream is connected and what the connection is about is known: count it opened,
    /// observe its setup time, and from now on count its bytes into its series as they flow.
    /// Inbound connections that did not name a service get the one they most likely used.
    /// Call once, before copying; later calls do nothing.
    pub fn established(&mut self) {
        if self.opened.get().is_some() {
            return;
        }
        self.guess_service();
        self.open_series();
        let kind = match self.direction {
            Direction::Outbound => LatencyKind::SetupOutbound,
            Direction::Inbound => LatencyKind::SetupInbound,
        };
        self.ctx.metrics.observe(kind, self.start.elapsed());
    }

    /// For an inbound connection that named no service, the one it most likely came through
    /// (before the labels are taken, whether the connection got established or not).
    fn guess_service(&mut self) {
        if self.direction == Direction::Inbound
            && self.dst_service.is_none()
            && self.opened.get().is_none()
            && let Some(w) = &self.dst_workload
        {
            let snapshot = self.ctx.shared.snapshot.load();
            self.dst_service = labels::guess_inbound_service(&snapshot, w, self.dst.0.port());
        }
    }

    /// The connection's opening series, counting it opened the first time.
    fn open_series(&self) -> &Rc<Series> {
        self.opened.get_or_init(|| {
            let series = self.ctx.metrics.series(&self.labels());
            series.open();
            self.counts
                .sent
                .attach(Meter::new(series.clone(), Flow::Request));
            self.counts
                .received
                .attach(Meter::new(series.clone(), Flow::Response));
            series
        })
    }

    /// The connection's metric labels, with `response_flags="-"`.
    fn labels(&self) -> LabelsRef<'_> {
        let mtls = self.src_identity.is_some();
        LabelsRef::new(&Conn {
            reporter: match self.direction {
                Direction::Outbound => Reporter::Source,
                Direction::Inbound => Reporter::Destination,
            },
            source: self.src_workload.as_deref(),
            source_principal: self.src_identity.as_ref().map(Identity::as_str),
            destination: self.dst_workload.as_deref(),
            destination_principal: self.dst_identity.as_ref().map(Identity::as_str),
            service: self.dst_service.as_deref(),
            security: if mtls {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::Unknown
            },
            response_flags: NO_FLAGS,
        })
    }

    /// Counts the outcome: closed (and failed, on error) under the outcome's flags.
    fn count_outcome(&self, flags: &'static str, failed: bool) {
        let opened = self.open_series();
        if flags == NO_FLAGS {
            opened.close(failed);
        } else {
            self.ctx
                .metrics
                .series(&self.labels().with_flags(flags))
                .close(failed);
        }
        self.ctx.metrics.connection_ended();
    }
}

impl Drop for ConnRecord {
    fn drop(&mut self) {
        let dur = self.start.elapsed();
        self.guess_service();
        let name = |w: &Option<Arc<Workload>>| w.as_ref().map(|w| w.name.to_string());
        let ns = |w: &Option<Arc<Workload>>| w.as_ref().map(|w| w.namespace.to_string());
        let id = |i: &Option<Identity>, w: &Option<Arc<Workload>>| {
            i.as_ref()
                .map(|i| i.to_string())
                .or_else(|| w.as_ref().map(|w| w.identity()))
        };
        let svc = self.dst_service.as_ref().map(|s| s.hostname.to_string());
        let error = self.error.borrow();
        let flags = error.as_ref().map_or(NO_FLAGS, Error::response_flag);
        self.count_outcome(flags, error.is_some());
        let duration = format!("{}ms", dur.as_millis());
        macro_rules! access {
            ($lvl:ident, $err:expr, $flag:expr) => {
                $lvl!(
                    target: "access",
                    core = self.core,
                    "src.addr" = %self.src,
                    "src.workload" = name(&self.src_workload),
                    "src.namespace" = ns(&self.src_workload),
                    "src.identity" = id(&self.src_identity, &self.src_workload),
                    "dst.addr" = %self.dst,
                    "dst.hbone_addr" = self.upstream.map(|a| a.to_string()),
                    "dst.service" = svc,
                    "dst.workload" = name(&self.dst_workload),
                    "dst.namespace" = ns(&self.dst_workload),
                    "dst.identity" = id(&self.dst_identity, &self.dst_workload),
                    direction = self.direction.name(),
                    bytes_sent = self.counts.sent.get(),
                    bytes_recv = self.counts.received.get(),
                    response_flags = $flag,
                    duration = %duration,
                    error = $err,
                    "complete dur={dur:?}"
                )
            };
        }
        match error.as_ref() {
            None => access!(info, None::<String>, "-"),
            Some(e) => access!(warn, Some(e.to_string()), e.response_flag()),
        }
    }
}
