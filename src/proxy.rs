//! The data path: what each listener does with an accepted connection.
//!
//! Runs on the cores, one monoio task per connection (per stream on 15008). Every listener task
//! reads top to bottom in four steps: **prepare** (route → authorize → connect upstream; the
//! client is not answered yet) → **answer** the client once (a refusal is a RST on the
//! plaintext listeners, 400 / 401 / 503 on an HBONE stream; success is 200 on HBONE, nothing to
//! send on plaintext) → **pump** the bytes → **record** the outcome. Modules:
//! - `outbound`: 15001, connections captured from local pods;
//! - `inbound_passthrough`: 15006, plaintext connections to local pods;
//! - `inbound`: 15008, HBONE tunnels from other nodes to local pods;
//! - `route`: the pure outbound routing decision;
//! - `error`: [`Error`], and the one table from an error to its answer, `response_flags` and
//!   side ([`Error::report`]);
//! - `record`: [`ConnRecord`], one per connection, which logs and counts the outcome once, on
//!   drop.
//!
//! This file holds the steps the listeners share: finding the local destination workload,
//! authorizing, the plain TCP upstream (connect, then pump), and the plaintext refusal.
//!
//! Built on `core` (the core's context and connection table), `hbone` (tunnels, pool) and `net`
//! (connect, RST, byte pump); `runtime` spawns the listeners' `serve` tasks.

mod capture;
mod error;
pub mod inbound;
pub mod inbound_passthrough;
mod local_reach;
pub mod outbound;
mod record;
pub mod route;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

use monoio::io::Splitable;
use monoio::net::TcpStream;
use tracing::info;

use crate::core::CoreCtx;
use crate::core::conns::{Registration, Subject};
use crate::identity::Identity;
use crate::net;
use crate::net::copy::{self, CopyError};
use crate::rbac;
use crate::state::{Snapshot, Workload};
use crate::sys::socket::{self, SpoofSide};

pub use capture::{Capture, Listener};
pub use error::{Answer, Error, Report, Role};
pub use record::ConnRecord;

/// The address of the peer that opened a connection to zring (a pod, or another node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The destination the client asked for, preserved by TPROXY as the accepted socket's local
/// address. On 15008 it is the tunnel's (`<pod ip>:15008`); each stream names its own
/// [`ConnectTarget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrigDst(pub SocketAddr);

/// The `ip:port` an HBONE CONNECT request asks for (15008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTarget(pub SocketAddr);

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

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
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

/// The answer step of the plaintext listeners for a refused connection: a RST (`SO_LINGER` 0),
/// so the client sees a failed connection rather than an empty one; then the record takes the
/// error.
fn refuse(downstream: TcpStream, rec: &ConnRecord, e: Error) {
    match e.report().answer {
        Answer::Refuse(_) => net::reset(downstream),
        Answer::Nothing => drop(downstream),
    }
    rec.finished(Err(e));
}

/// The identity `w` runs as, or why it has none (its names came from the control plane).
fn workload_identity(w: &Workload) -> Result<Identity, Error> {
    Identity::of_workload(w).map_err(|_| Error::NoIdentity(w.uid.clone()))
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

/// Runs a connection's pump until it ends, or until a policy change revokes the connection
/// (`registration`: its entry in the core's table; `None` when no policy applies): then the
/// sockets behind `fds` (still open: the pump owns them until this returns) are set to reset on
/// close, so both ends see the connection fail rather than end.
///
/// The caller pins the pump: taken by value, it would sit in this future twice (the argument
/// and its pinned copy), a kilobyte more for every connection's task.
pub async fn until_revoked(
    pump: Pin<&mut impl Future<Output = Result<(), CopyError>>>,
    registration: Option<&mut Registration<'_>>,
    fds: &[RawFd],
) -> Result<(), Error> {
    let Some(registration) = registration else {
        return Ok(pump.await?);
    };
    let why = monoio::select! {
        r = pump => return r.map_err(Error::from),
        why = registration.revoked() => why,
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

/// A plain TCP upstream, connected from the client's own IP, and the connection-table entry
/// that lets a policy change revoke the connection (`None`: no policy applies on this path).
pub struct TcpUpstream<'c> {
    stream: TcpStream,
    registration: Option<Registration<'c>>,
}

impl<'c> TcpUpstream<'c> {
    /// Connects to `dst` as `capture` makes upstream sockets (node mode: from the client's IP;
    /// in a pod: from inside its netns), the last step of preparing a plaintext upstream, and
    /// records the connection established.
    pub async fn connect(
        ctx: &CoreCtx,
        capture: &Capture,
        rec: &mut ConnRecord,
        dst: SocketAddr,
        side: SpoofSide,
        registration: Option<Registration<'c>>,
    ) -> Result<TcpUpstream<'c>, Error> {
        let stream = capture.connect(ctx, dst, rec.src().0, side).await?;
        rec.established(dst);
        Ok(TcpUpstream {
            stream,
            registration,
        })
    }

    /// Copies between the client and the upstream until both are done (or a policy change
    /// revokes the connection).
    pub async fn pump(
        mut self,
        ctx: &CoreCtx,
        downstream: TcpStream,
        rec: &ConnRecord,
    ) -> Result<(), Error> {
        let fds = [downstream.as_raw_fd(), self.stream.as_raw_fd()];
        let pump = copy::bidirectional(
            downstream.into_split(),
            self.stream.into_split(),
            &ctx.buffers,
            rec.counts(),
        );
        until_revoked(std::pin::pin!(pump), self.registration.as_mut(), &fds).await
    }

    /// The socket and the registration, for a path that pumps them its own way (15008).
    pub fn into_parts(self) -> (TcpStream, Option<Registration<'c>>) {
        (self.stream, self.registration)
    }
}
