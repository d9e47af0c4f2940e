//! 15008: HBONE tunnels from other nodes (or local pods through a remote waypoint) to pods on
//! this node.
//!
//! Runs on a core. One task per TCP connection terminates mTLS and serves HTTP/2; each CONNECT
//! stream then gets its own task, which reads top to bottom: check the request → find the local
//! workload → authorize the peer's identity (`rbac`) → connect to the pod from the client's IP
//! → answer 200 → pump (until done, or until a policy change revokes it) → record. The certificate presented is the destination pod's own, chosen by the connection's
//! original destination IP (TPROXY keeps it), so no SNI is needed.
//!
//! Answers: 400 for a request that is not a CONNECT to `ip:port` of the pod this connection was
//! addressed to (or to a pod not on this node), 401 when authorization denies the peer, 503
//! when the pod cannot be reached, 200 and the bytes otherwise. A TLS handshake that fails (unknown CA, foreign trust domain, no client
//! certificate) closes the connection before any HTTP is spoken.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, StatusCode};
use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{ClientAddr, ConnRecord, Direction, Error, OrigDst};
use crate::core::CoreCtx;
use crate::core::conns::Subject;
use crate::hbone::pump::{self, TcpSide};
use crate::hbone::{HboneError, server, tls};
use crate::identity::Identity;
use crate::metrics::LatencyKind;
use crate::metrics::Refusal;
use crate::state::Workload;
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
}

pub async fn serve(ctx: Rc<CoreCtx>, tcp: TcpStream, peer: SocketAddr) {
    let dst = match tcp.local_addr() {
        Ok(a) => OrigDst(a),
        Err(e) => {
            debug!(core = ctx.id, "inbound: {e}");
            return;
        }
    };
    let local_identity = match local_identity(&ctx, dst) {
        Ok(id) => id,
        Err(e) => {
            warn!(core = ctx.id, src.addr = %peer, dst.addr = %dst, "HBONE connection refused: {e}");
            ctx.metrics.hbone_refused(Refusal::NoLocalWorkload);
            super::reset(tcp);
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
            super::reset(tcp);
            return;
        }
    };
    let timeout = ctx.config().connect_timeout;
    let started = std::time::Instant::now();
    let (io, peer_identity) = match monoio::time::timeout(timeout, tls::accept(tcp, config)).await {
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
            warn!(core = ctx.id, src.addr = %peer, dst.addr = %dst, "HBONE TLS handshake timed out");
            ctx.metrics.hbone_refused(Refusal::TlsHandshake);
            return;
        }
    };
    let tunnel = Rc::new(Tunnel {
        peer: ClientAddr(peer),
        dst,
        peer_identity,
        local_identity,
    });
    let served = server::serve(io, peer, ctx.draining.wait(), |request, respond| {
        monoio::spawn(stream(ctx.clone(), tunnel.clone(), request, respond));
    })
    .await;
    if let Err(e) = served {
        // h2 ending the connection itself (GOAWAY) means the client broke the protocol or an
        // abuse limit; `server::serve` has logged it.
        if e.is_go_away() && e.is_library() {
            ctx.metrics.hbone_refused(Refusal::Http2);
        }
        debug!(core = ctx.id, src.addr = %peer, "HBONE connection ended: {e}");
    }
}

/// The identity of the local workload at `dst`'s IP: the certificate to present.
fn local_identity(ctx: &CoreCtx, dst: OrigDst) -> Result<Identity, Error> {
    let snapshot = ctx.shared.snapshot.load();
    let w = local_workload(ctx, &snapshot, dst.0)?;
    let (td, ns, sa) = w.identity_parts();
    Identity::new(td, ns, sa).map_err(|_| Error::NoIdentity(w.uid.clone()))
}

fn local_workload(
    ctx: &CoreCtx,
    snapshot: &crate::state::Snapshot,
    dst: SocketAddr,
) -> Result<Arc<Workload>, Error> {
    let w = snapshot
        .workload_by_ip(dst.ip())
        .ok_or(Error::UnknownDestination(dst.ip()))?;
    if *w.node != *ctx.config().node_name {
        return Err(Error::NotLocal(dst.ip()));
    }
    Ok(w.clone())
}

async fn stream(
    ctx: Rc<CoreCtx>,
    tunnel: Rc<Tunnel>,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let _active = ctx.track();
    let mut rec = ConnRecord::new(&ctx, Direction::Inbound, tunnel.peer, tunnel.dst);
    rec.src_identity = Some(tunnel.peer_identity.clone());
    rec.dst_identity = Some(tunnel.local_identity.clone());
    if let Err(e) = proxy(&ctx, &tunnel, request, respond, &mut rec).await {
        rec.fail(e);
    }
}

async fn proxy(
    ctx: &CoreCtx,
    tunnel: &Tunnel,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    rec: &mut ConnRecord,
) -> Result<(), Error> {
    let cfg = ctx.config();
    let target = match server::connect_target(&request) {
        Ok(t) => t,
        Err(e) => {
            server::refuse(respond, StatusCode::BAD_REQUEST);
            return Err(HboneError::BadRequest(bad_request_reason(&e)).into());
        }
    };
    rec.dst = OrigDst(target);
    info!(core = ctx.id, "got CONNECT request to {target}");
    if target.ip() != tunnel.dst.0.ip() {
        server::refuse(respond, StatusCode::BAD_REQUEST);
        return Err(HboneError::BadRequest("target IP is not the connection's destination").into());
    }
    let registration = {
        let snapshot = ctx.shared.snapshot.load();
        rec.src_workload = snapshot.workload_by_ip(tunnel.peer.0.ip()).cloned();
        let w = match local_workload(ctx, &snapshot, target) {
            Ok(w) => w,
            Err(e) => {
                server::refuse(respond, StatusCode::BAD_REQUEST);
                return Err(e);
            }
        };
        rec.dst_workload = Some(w.clone());
        let subject = Subject {
            src_identity: Some(tunnel.peer_identity.clone()),
            src_ip: tunnel.peer.0.ip(),
            dst: target,
            dst_uid: w.uid.clone(),
        };
        match super::authorize(ctx, &snapshot, subject, &w) {
            Ok(r) => r,
            Err(e) => {
                server::refuse(respond, StatusCode::UNAUTHORIZED);
                return Err(e);
            }
        }
    };
    let connect = super::connect(
        target,
        Some(tunnel.peer.0.ip()),
        SpoofSide::Inbound,
        cfg.packet_mark,
        cfg.connect_timeout,
    );
    // A stream the client resets meanwhile stops the connect (rapid-reset floods).
    let upstream = match server::unless_reset(&mut respond, connect)
        .await
        .map_err(HboneError::H2)?
    {
        Ok(s) => s,
        Err(e) => {
            server::refuse(respond, StatusCode::SERVICE_UNAVAILABLE);
            return Err(e);
        }
    };
    rec.upstream = Some(target);
    let send = server::accept(respond).map_err(HboneError::H2)?;
    rec.established();
    let fd = upstream.as_raw_fd();
    let pump = pump::bidirectional(
        upstream,
        send,
        request.into_body(),
        TcpSide::Upstream,
        ctx.buffers.large_size(),
        (&rec.counts.sent, &rec.counts.received),
    );
    super::until_revoked(std::pin::pin!(pump), &registration.kill, &[fd]).await
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
