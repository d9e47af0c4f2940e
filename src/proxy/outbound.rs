//! 15001: connections captured from pods on this node, original destination preserved.
//!
//! Runs on a core, one task per connection: read the original destination, take the routing
//! decision from the snapshot (`route::outbound`, pure), connect, pump, record. Refusals close
//! with RST so the application sees a failed connection, not an empty one.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::io::Splitable;
use monoio::net::TcpStream;
use tracing::{debug, info};

use super::route::{self, Action};
use super::{ClientAddr, ConnRecord, Direction, Error, OrigDst};
use crate::core::CoreCtx;
use crate::core::conns::Subject;
use crate::hbone::HboneError;
use crate::hbone::client::Dial;
use crate::hbone::headers::{self, TraceParent};
use crate::hbone::pool::PoolKey;
use crate::hbone::pump::{self, TcpSide};
use crate::identity::Identity;
use crate::net::copy;
use crate::state::Workload;
use crate::sys::socket::SpoofSide;

pub async fn serve(ctx: Rc<CoreCtx>, downstream: TcpStream, peer: std::net::SocketAddr) {
    let dst = match downstream.local_addr() {
        Ok(a) => OrigDst(a),
        Err(e) => {
            debug!(core = ctx.id, "outbound: {e}");
            return;
        }
    };
    // Counted from accept, so a drain waits for connections still being set up too.
    let _active = ctx.track();
    let mut rec = ConnRecord::new(&ctx, Direction::Outbound, ClientAddr(peer), dst);
    if let Err(e) = proxy(&ctx, downstream, &mut rec).await {
        rec.fail(e);
    }
}

async fn proxy(ctx: &CoreCtx, downstream: TcpStream, rec: &mut ConnRecord) -> Result<(), Error> {
    let cfg = ctx.config();
    let snapshot = ctx.shared.snapshot.load_full();
    let decision = route::outbound(
        &snapshot,
        &cfg.node_name,
        rec.src.0.ip(),
        rec.dst.0,
        ctx.random(),
    );
    let route = match decision {
        Ok(r) => r,
        Err(denied) => {
            super::reset(downstream);
            return Err(denied.into());
        }
    };
    rec.src_workload = Some(route.source.clone());
    rec.dst_workload = route.dst_workload.clone();
    rec.dst_service = route.dst_service;

    let target = match route.action {
        Action::Passthrough(a) | Action::Direct(a) | Action::DirectLocal(a) => a,
        Action::Hbone {
            via,
            authority,
            kind,
            ref peer,
        } => {
            info!(
                core = ctx.id,
                "proxy to {} using HBONE via {via} type {kind}", rec.dst
            );
            drop(snapshot);
            return tunnel(ctx, downstream, rec, &route.source, peer, via, authority).await;
        }
    };
    info!(
        core = ctx.id,
        "proxy to {target} using TCP type {}",
        route.action.kind()
    );
    // A pod on this node: no zring on the way in, so this core enforces the destination's
    // policies itself, with the source's identity (zring knows its own pods).
    let registration = match (&route.action, &route.dst_workload) {
        (Action::DirectLocal(_), Some(dst)) => {
            let subject = Subject {
                src_identity: workload_identity(&route.source).ok(),
                src_ip: rec.src.0.ip(),
                dst: target,
                dst_uid: dst.uid.clone(),
            };
            match super::authorize(ctx, &snapshot, subject, dst) {
                Ok(r) => Some(r),
                Err(e) => {
                    super::reset(downstream);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    drop(snapshot);
    let upstream = match super::connect(
        target,
        Some(rec.src.0.ip()),
        SpoofSide::Outbound,
        cfg.packet_mark,
        cfg.connect_timeout,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            super::reset(downstream);
            return Err(e);
        }
    };
    rec.upstream = Some(target);
    rec.established();
    let fds = [downstream.as_raw_fd(), upstream.as_raw_fd()];
    let pump = copy::bidirectional(
        downstream.into_split(),
        upstream.into_split(),
        &ctx.buffers,
        &rec.counts,
    );
    match &registration {
        Some(r) => super::until_revoked(std::pin::pin!(pump), &r.kill, &fds).await,
        None => Ok(pump.await?),
    }
}

/// The SPIFFE identity a workload's names make.
fn workload_identity(w: &Workload) -> Result<Identity, Error> {
    let (td, ns, sa) = w.identity_parts();
    Identity::new(td, ns, sa).map_err(|_| Error::NoIdentity(w.uid.clone()))
}

/// Tunnels the connection over HBONE to `via` (the destination pod's or its waypoint's
/// 15008), presenting `source`'s certificate and accepting only `peer`'s identity (plus the
/// service's extra SANs when the destination was reached through its VIP).
async fn tunnel(
    ctx: &CoreCtx,
    downstream: TcpStream,
    rec: &mut ConnRecord,
    source: &Workload,
    peer: &Workload,
    via: SocketAddr,
    authority: SocketAddr,
) -> Result<(), Error> {
    let cfg = ctx.config();
    // Boxed, and gone once the stream is open: the pool checkout (dial, TLS handshake, h2
    // handshake) is several KiB of state that an idle connection's task would otherwise carry
    // for its whole life (`cargo rustc -- -Zprint-type-sizes` shows each task's size).
    let result = Box::pin(async {
        let source_id = workload_identity(source)?;
        let peer_id = workload_identity(peer)?;
        rec.src_identity = Some(source_id.clone());
        rec.dst_identity = Some(peer_id.clone());
        let mut expected = vec![peer_id];
        // A service's extra SANs vouch for its endpoints, not for a waypoint in front of it.
        if let Some(svc) = &rec.dst_service
            && rec.dst_workload.as_ref().is_some_and(|w| w.uid == peer.uid)
        {
            expected.extend(
                svc.subject_alt_names
                    .iter()
                    .filter_map(|s| Identity::parse(s).ok()),
            );
        }
        if !super::certificate_ready(ctx, &source_id).await {
            return Err(HboneError::NoCertificate(source_id).into());
        }
        let store = ctx.shared.certs.load();
        let config = ctx
            .tls
            .client(&store, &source_id, &expected)
            .map_err(HboneError::Config)?;
        drop(store);
        let key = PoolKey {
            source: source_id,
            expected: expected.into(),
            dst: via,
            source_ip: Some(rec.src.0.ip()),
        };
        let dial = Dial {
            via,
            source_ip: key.source_ip,
            mark: cfg.packet_mark,
            timeout: cfg.connect_timeout,
        };
        // A pooled connection can turn out to be going away (the peer drains, or died) only
        // when a stream is tried on it; then one fresh attempt, which dials if need be.
        let mut retried = false;
        let (lease, (send, recv)) = loop {
            let lease = ctx.pool.checkout(&key, dial, &config).await?;
            let trace = TraceParent::new(ctx.random(), ctx.random(), ctx.random());
            let request = headers::connect_request(authority, rec.src.0, source, trace);
            match lease.open(request, cfg.connect_timeout).await {
                Ok(stream) => break (lease, stream),
                Err(HboneError::Retryable(e)) if !retried => {
                    debug!(core = ctx.id, peer = %via, "retrying on a new HBONE connection: {e}");
                    retried = true;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok::<_, Error>((lease, send, recv))
    })
    .await;
    let (_lease, send, recv) = match result {
        Ok(r) => r,
        Err(e) => {
            super::reset(downstream);
            return Err(e);
        }
    };
    rec.upstream = Some(via);
    rec.established();
    pump::bidirectional(
        downstream,
        send,
        recv,
        TcpSide::Downstream,
        ctx.buffers.large_size(),
        (&rec.counts.sent, &rec.counts.received),
    )
    .await?;
    Ok(())
}
