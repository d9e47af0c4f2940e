//! 15001: connections captured from pods on this node, original destination preserved.
//!
//! Runs on a core, one task per connection: read the original destination, take the routing
//! decision from the snapshot (`route::outbound`, pure), connect, pump, record. Refusals close
//! with RST so the application sees a failed connection, not an empty one.

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::io::Splitable;
use monoio::net::TcpStream;
use tracing::{debug, info};

use super::hbone::HboneError;
use super::hbone::client::Dial;
use super::hbone::headers::{self, TraceParent};
use super::hbone::pump::{self, TcpSide};
use super::pool::PoolKey;
use super::route::{self, Action};
use super::{ClientAddr, ConnRecord, Direction, Error, OrigDst, copy};
use crate::core::CoreCtx;
use crate::identity::Identity;
use crate::state::Workload;

pub async fn serve(ctx: Rc<CoreCtx>, downstream: TcpStream, peer: std::net::SocketAddr) {
    let dst = match downstream.local_addr() {
        Ok(a) => OrigDst(a),
        Err(e) => {
            debug!(core = ctx.id, "outbound: {e}");
            return;
        }
    };
    let mut rec = ConnRecord::new(&ctx, Direction::Outbound, ClientAddr(peer), dst);
    if let Err(e) = proxy(&ctx, downstream, &mut rec).await {
        rec.fail(e);
    }
}

async fn proxy(ctx: &CoreCtx, downstream: TcpStream, rec: &mut ConnRecord) -> Result<(), Error> {
    let cfg = ctx.config();
    let decision = {
        let snapshot = ctx.shared.snapshot.load_full();
        route::outbound(
            &snapshot,
            &cfg.node_name,
            rec.src.0.ip(),
            rec.dst.0,
            ctx.random(),
        )
    };
    let route = match decision {
        Ok(r) => r,
        Err(denied) => {
            super::reset(downstream);
            return Err(denied.into());
        }
    };
    rec.src_workload = Some(route.source.clone());
    rec.dst_workload = route.dst_workload;
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
            return tunnel(ctx, downstream, rec, &route.source, peer, via, authority).await;
        }
    };
    info!(
        core = ctx.id,
        "proxy to {target} using TCP type {}",
        route.action.kind()
    );
    let upstream = match super::connect(
        target,
        Some(rec.src.0.ip()),
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
    let _active = ctx.track();
    copy::bidirectional(
        downstream.into_split(),
        upstream.into_split(),
        &ctx.buffers,
        &rec.counts,
    )
    .await?;
    Ok(())
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
    let result = async {
        let (td, ns, sa) = source.identity_parts();
        let source_id =
            Identity::new(td, ns, sa).map_err(|_| Error::NoIdentity(source.uid.clone()))?;
        let (td, ns, sa) = peer.identity_parts();
        let peer_id = Identity::new(td, ns, sa).map_err(|_| Error::NoIdentity(peer.uid.clone()))?;
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
        let store = ctx.shared.certs.load();
        if store.get(&source_id).is_none() {
            return Err(HboneError::NoCertificate(source_id).into());
        }
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
        let lease = ctx.pool.checkout(&key, dial, &config).await?;
        let trace = TraceParent::new(ctx.random(), ctx.random(), ctx.random());
        let request = headers::connect_request(authority, rec.src.0, source, trace);
        let (send, recv) = lease.open(request, cfg.connect_timeout).await?;
        Ok::<_, Error>((lease, send, recv))
    }
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
    let _active = ctx.track();
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
