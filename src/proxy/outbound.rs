//! 15001: connections captured from pods on this node, original destination preserved.
//!
//! Runs on a core, one task per connection: read the original destination, take the routing
//! decision from the snapshot (`route::outbound`, pure), connect, pump, record. Refusals close
//! with RST so the application sees a failed connection, not an empty one.

use std::rc::Rc;

use monoio::io::Splitable;
use monoio::net::TcpStream;
use tracing::{debug, info};

use super::route::{self, Action};
use super::{ClientAddr, ConnRecord, Direction, Error, OrigDst, copy};
use crate::core::CoreCtx;

pub async fn serve(ctx: Rc<CoreCtx>, downstream: TcpStream, peer: std::net::SocketAddr) {
    let dst = match downstream.local_addr() {
        Ok(a) => OrigDst(a),
        Err(e) => {
            debug!(core = ctx.id, "outbound: {e}");
            return;
        }
    };
    let mut rec = ConnRecord::new(ctx.id, Direction::Outbound, ClientAddr(peer), dst);
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
    rec.src_workload = Some(route.source);
    rec.dst_workload = route.dst_workload;
    rec.dst_service = route.dst_service;

    let target = match route.action {
        Action::Passthrough(a) | Action::Direct(a) | Action::DirectLocal(a) => a,
        Action::Hbone { via, .. } => {
            super::reset(downstream);
            return Err(Error::HboneUnavailable(via));
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
