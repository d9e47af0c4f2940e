//! 15008: HBONE tunnels from other nodes (or local pods through a remote waypoint) to pods on
//! this node.
//!
//! Runs on a core. One task per TCP connection terminates mTLS and serves HTTP/2. The
//! certificate presented is the destination pod's own, chosen by the connection's original
//! destination IP (TPROXY keeps it; in a pod the listener is the pod's own, addressed
//! directly), so no SNI is needed. In a pod only the pod itself is served (see [`Capture`]). A TLS handshake that fails (unknown
//! CA, foreign trust domain, no client certificate) closes the connection before any HTTP is
//! spoken, and is counted as a refused HBONE connection (no access-log record).
//!
//! Each CONNECT stream then gets its own task, which reads top to bottom: prepare (check the
//! request, find the local workload, authorize the peer's identity with `rbac`, connect to the
//! pod from the client's IP) → answer once (400 for a request that is not a CONNECT to `ip:port`
//! of the pod this connection was addressed to, or to a pod not on this node; 401 when
//! authorization denies the peer; 503 when the pod cannot be reached; else 200) → pump (until
//! done, or until a policy change revokes it) → record.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::Request;
use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{
    Answer, Capture, ClientAddr, ConnRecord, ConnectTarget, Direction, Error, Listener, OrigDst,
    TcpUpstream,
};
use crate::core::CoreCtx;
use crate::core::conns::{Registration, Subject};
use crate::hbone::limits::{ActiveStream, StreamPermit, Window};
use crate::hbone::pump;
use crate::hbone::server::Ended;
use crate::hbone::{HboneError, server, tls};
use crate::identity::Identity;
use crate::latch::Latch;
use crate::metrics::{LatencyKind, Refusal};
use crate::net::{self, Side};
use crate::sys::socket;
use crate::sys::socket::SpoofSide;

/// What every stream of one HBONE connection shares.
#[derive(Debug)]
struct Tunnel {
    /// The TCP peer: the client pod's IP when the far zring spoofs it, as zring and ztunnel do.
    peer: ClientAddr,
    /// The connection's original destination, `<pod ip>:15008`.
    dst: OrigDst,
    /// The client's identity, proven by its certificate.
    peer_identity: Identity,
    /// The identity we presented: the destination pod's.
    local_identity: Identity,
    /// How the connection reached zring: node TPROXY, or the destination pod's own listener.
    capture: Capture,
    /// Fired when the HTTP/2 connection has ended: nothing drives it any more, so its streams
    /// can make no progress, and a stream whose pod neither reads nor writes would otherwise
    /// hold its socket (and its stream place) for as long as the pod stalls.
    closed: Latch<()>,
}

pub async fn serve(ctx: Rc<CoreCtx>, capture: Capture, tcp: TcpStream, peer: SocketAddr) {
    // Caps first: they cost a hash lookup, the rest costs a handshake. A refusal is a reset
    // before TLS (counted, logged at debug: a flood must not flood the log too).
    let _place = match ctx.hbone_gate.admit(peer.ip()) {
        Ok(place) => place,
        Err(why) => {
            debug!(core = ctx.id, src.addr = %peer, "HBONE connection refused: {}", why.as_str());
            net::reset(tcp);
            return;
        }
    };
    let Some(dst) = capture.orig_dst(&ctx, &tcp, Listener::Inbound) else {
        return;
    };
    let local_identity = match local_identity(&ctx, &capture, dst).await {
        Ok(id) => id,
        Err(e) => {
            warn!(core = ctx.id, src.addr = %peer, dst.addr = %dst, "HBONE connection refused: {e}");
            ctx.metrics.hbone_refused(Refusal::NoLocalWorkload);
            net::reset(tcp);
            return;
        }
    };
    let _tunnel = ctx.track_tunnel();
    super::certificate_ready(&ctx, &local_identity).await;
    let config = {
        let store = ctx.shared.certs.load();
        ctx.tls.server(&store, &local_identity)
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            warn!(core = ctx.id, src.addr = %peer, dst.addr = %dst, "HBONE connection refused: {e}");
            ctx.metrics.hbone_refused(Refusal::NoCertificate);
            net::reset(tcp);
            return;
        }
    };
    let limits = ctx.hbone_gate.limits;
    let timeout = limits.tls_timeout;
    let started = std::time::Instant::now();
    let (io, peer_identity) = match monoio::time::timeout(
        timeout,
        tls::server_handshake(tcp, config, ctx.driver),
    )
    .await
    {
        Ok(Ok(r)) => {
            ctx.metrics
                .observe(LatencyKind::HandshakeServer, started.elapsed());
            r
        }
        Ok(Err(e)) => {
            warn!(core = ctx.id, src.addr = %peer, dst.addr = %dst, "HBONE TLS handshake failed: {e}");
            ctx.metrics.hbone_refused(Refusal::TlsHandshake);
            return;
        }
        Err(_) => {
            debug!(core = ctx.id, src.addr = %peer, dst.addr = %dst, "HBONE TLS handshake timed out");
            ctx.metrics.hbone_refused(Refusal::TlsTimeout);
            return;
        }
    };
    let tunnel = Rc::new(Tunnel {
        peer: ClientAddr(peer),
        dst,
        peer_identity,
        local_identity,
        capture,
        closed: Latch::default(),
    });
    let stopping = tunnel.capture.stopping(&ctx);
    let opts = server::Options::new(limits.preface_timeout, limits.idle_timeout);
    // Reserved once the client is authenticated: a stranger reserves nothing.
    let window = Window::new(&ctx.hbone_gate);
    let served = server::serve_with(io, peer, stopping, opts, &window, |request, respond, active| {
        // Streams of one identity are capped per core, whatever connection they come on.
        match ctx.hbone_gate.stream(&tunnel.peer_identity) {
            Some(place) => {
                let connect = Connect::new(request, respond);
                let places = (place, active);
                crate::task::spawn(
                    "hbone_stream",
                    stream(ctx.clone(), tunnel.clone(), connect, places),
                );
            }
            None => {
                debug!(core = ctx.id, src.addr = %peer, "HBONE stream refused: identity at its limit");
                let mut respond = respond;
                respond.send_reset(Reason::REFUSED_STREAM);
            }
        }
    })
    .await;
    tunnel.closed.fire(());
    match served {
        Ok(Ended::PrefaceTimeout) => {
            debug!(core = ctx.id, src.addr = %peer, "HBONE connection closed: no HTTP/2 preface in time");
            ctx.metrics.hbone_refused(Refusal::PrefaceTimeout);
        }
        Ok(Ended::Idle) => ctx.hbone_gate.closed_idle(),
        Ok(Ended::Closed | Ended::Silent) => {}
        Err(e) => {
            // h2 ending the connection itself (GOAWAY) means the client broke the protocol or
            // an abuse limit; `server::serve_with` has logged it.
            if e.is_go_away() && e.is_library() {
                ctx.metrics.hbone_refused(Refusal::Http2);
            }
            debug!(core = ctx.id, src.addr = %peer, "HBONE connection ended: {e}");
        }
    }
}

/// The identity of the local workload at `dst`'s IP: the certificate to present.
/// A destination newer than the snapshot is waited for (bounded) before the handshake.
async fn local_identity(ctx: &CoreCtx, capture: &Capture, dst: OrigDst) -> Result<Identity, Error> {
    let mut snapshot = ctx.shared.snapshot.load_full();
    let w = capture.local_workload(ctx, &mut snapshot, dst.0).await?;
    super::workload_identity(&w)
}

/// What a stream's task keeps of its request: the target, parsed at once, and the two halves
/// of the stream. The request head (method, URI, header map) is dropped before the task is
/// spawned, so no stream holds it (or the buffer its strings share) while it lives.
struct Connect {
    /// The CONNECT target, or why the request is refused (answered 400).
    target: Result<SocketAddr, &'static str>,
    body: RecvStream,
    respond: SendResponse<Bytes>,
}

impl Connect {
    fn new(request: Request<RecvStream>, respond: SendResponse<Bytes>) -> Connect {
        let target = server::connect_target(&request).map_err(|e| bad_request_reason(&e));
        Connect {
            target,
            body: request.into_body(),
            respond,
        }
    }
}

/// Bytes of one CONNECT stream's task future, which every open stream keeps allocated for its
/// whole life (`tests/idle_sizes.rs` prints it for `perf/notes-hbone.md`).
pub fn stream_task_size() -> usize {
    fn size<A, B, C, D, F: std::future::Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size(stream)
}

/// One CONNECT stream: prepare → answer → pump → record.
///
/// Not an `async fn`, and the setup kept out of the block: an `async fn` keeps its arguments
/// for its whole life beside what they are moved into, and so does a block every local it has
/// borrowed or only partly moved, while an idle stream's task is mostly what it keeps. Here
/// each argument is captured once, the setup (boxed) answers the stream, and a plain function
/// builds the pump, so the task holds the record, the registration and the pump while the
/// stream lives (`tests/idle_sizes.rs`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments beside what they are moved into"
)]
fn stream(
    ctx: Rc<CoreCtx>,
    tunnel: Rc<Tunnel>,
    connect: Connect,
    places: (StreamPermit, ActiveStream),
) -> impl Future<Output = ()> {
    async move {
        let _places = &places;
        let _active = ctx.track();
        let mut rec = ConnRecord::new(
            &ctx,
            &tunnel.capture,
            Direction::Inbound,
            tunnel.peer,
            tunnel.dst,
        );
        rec.mutual_tls(tunnel.peer_identity.clone(), tunnel.local_identity.clone());
        // Boxed, and gone once the pod is connected: the lookups and the connect are larger
        // than the pump, and an idle stream's task would carry them for its whole life.
        let Some((upstream, mut registration, send, body)) =
            Box::pin(answer(&ctx, &tunnel, connect, &mut rec)).await
        else {
            return;
        };
        let (mut pump, fd) = to_pod(upstream, send, body, ctx.buffers.large_size(), &rec);
        let fds = [fd];
        let pump = super::until_revoked(Pin::new(&mut pump), registration.as_mut(), &fds);
        let result = monoio::select! {
            result = pump => result,
            () = tunnel.closed.wait() => {
                // The HTTP/2 connection ended under the stream: the transfer is cut, so the
                // pod gets a reset, not a FIN that would pass for a clean end. It also frees at
                // once what the kernel still holds toward a pod that stopped reading (up to its
                // send buffer), instead of an orphan socket probing a zero window for minutes.
                let _ = socket::set_reset_on_close(&fd);
                Err(HboneError::Downstream(h2::Error::from(Reason::CANCEL)).into())
            }
        };
        rec.finished(result);
    }
}

/// What a stream answered 200 goes on with: the pod's socket, the connection's registration
/// (when a policy applies), and the stream's two halves.
type Answered<'c> = (
    TcpStream,
    Option<Registration<'c>>,
    SendStream<Bytes>,
    RecvStream,
);

/// Prepares the stream and answers it: 200 and what the pump needs, or the refusal (recorded
/// in `rec`) and `None`.
async fn answer<'c>(
    ctx: &'c CoreCtx,
    tunnel: &Tunnel,
    connect: Connect,
    rec: &mut ConnRecord,
) -> Option<Answered<'c>> {
    let Connect {
        target,
        body,
        mut respond,
    } = connect;
    match prepare(ctx, tunnel, target, &mut respond, rec).await {
        Ok(upstream) => {
            let (upstream, registration) = upstream.into_parts();
            match server::respond_ok(respond) {
                Ok(send) => Some((upstream, registration, send, body)),
                Err(e) => {
                    rec.finished(Err(HboneError::Downstream(e).into()));
                    None
                }
            }
        }
        Err(e) => {
            if let Answer::Refuse(status) = e.report().answer {
                server::refuse(respond, status);
            }
            rec.finished(Err(e));
            None
        }
    }
}

/// The pump between the stream and the pod, and the pod socket's descriptor. A plain function:
/// the socket's 80 bytes, once split into the pump, stay out of the task's state.
fn to_pod<'a>(
    upstream: TcpStream,
    send: SendStream<Bytes>,
    body: RecvStream,
    large: usize,
    rec: &'a ConnRecord,
) -> (pump::Pump<'a>, RawFd) {
    // The socket goes to the destination pod (upstream); the stream came from downstream.
    let fd = upstream.as_raw_fd();
    let counts = rec.counts();
    let pump = pump::bidirectional(
        upstream,
        send,
        body,
        (Side::Upstream, Side::Downstream),
        large,
        (&counts.received, &counts.sent),
    );
    (pump, fd)
}

/// Checks the request's target, finds the local workload, authorizes the peer and connects to
/// the pod from the client's IP; the stream is not answered.
async fn prepare<'c>(
    ctx: &'c CoreCtx,
    tunnel: &Tunnel,
    target: Result<SocketAddr, &'static str>,
    respond: &mut SendResponse<Bytes>,
    rec: &mut ConnRecord,
) -> Result<TcpUpstream<'c>, Error> {
    let target = target.map_err(HboneError::BadRequest)?;
    rec.requested(ConnectTarget(target));
    info!(core = ctx.id, "got CONNECT request to {target}");
    if target.ip() != tunnel.dst.0.ip() {
        return Err(HboneError::BadRequest("target IP is not the connection's destination").into());
    }
    let registration = {
        let mut snapshot = ctx.shared.snapshot.load_full();
        let workload = tunnel
            .capture
            .local_workload(ctx, &mut snapshot, target)
            .await;
        let src_workload = snapshot.workload_by_ip(tunnel.peer.0.ip()).cloned();
        rec.routed(src_workload, workload.as_ref().ok().cloned(), None);
        let workload = workload?;
        let subject = Subject {
            src_identity: Some(tunnel.peer_identity.clone()),
            src_ip: tunnel.peer.0.ip(),
            dst: target,
            dst_uid: workload.uid.clone(),
        };
        super::authorize(ctx, &snapshot, subject, &workload)?
    };
    let connect = TcpUpstream::connect(
        ctx,
        &tunnel.capture,
        rec,
        target,
        SpoofSide::Inbound,
        Some(registration),
    );
    // A stream the client resets meanwhile stops the connect (rapid-reset floods).
    server::unless_reset(respond, connect)
        .await
        .map_err(HboneError::Downstream)?
}

fn bad_request_reason(e: &crate::hbone::headers::HeaderError) -> &'static str {
    use crate::hbone::headers::HeaderError;
    match e {
        HeaderError::Method => "method is not CONNECT",
        HeaderError::Authority | HeaderError::AuthorityPort => "authority is not ip:port",
        HeaderError::TooLong
        | HeaderError::Traceparent
        | HeaderError::Forwarded
        | HeaderError::Baggage => "malformed header",
    }
}
