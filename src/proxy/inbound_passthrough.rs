//! 15006: plaintext connections to pods on this node, captured by TPROXY on arrival.
//!
//! Runs on a core, one task per connection. The original destination must be a workload on
//! this node, and authorization (`rbac`, with no source identity: plaintext proves none) must
//! allow it; zring connects to it from the client's own IP (IP_TRANSPARENT), so the pod sees
//! the real client, and pumps bytes until done or until a policy change revokes the
//! connection. Refusals close with RST.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::io::Splitable;
use monoio::net::TcpStream;
use tracing::debug;

use super::{ClientAddr, ConnRecord, Direction, Error, OrigDst, route};
use crate::config::OWN_PORTS;
use crate::core::CoreCtx;
use crate::core::conns::Subject;
use crate::net::copy;
use crate::sys::socket::SpoofSide;

pub async fn serve(ctx: Rc<CoreCtx>, downstream: TcpStream, peer: std::net::SocketAddr) {
    let dst = match downstream.local_addr() {
        Ok(a) => OrigDst(a),
        Err(e) => {
            debug!(core = ctx.id, "inbound plaintext: {e}");
            return;
        }
    };
    let _active = ctx.track();
    let mut rec = ConnRecord::new(&ctx, Direction::Inbound, ClientAddr(peer), dst);
    if let Err(e) = proxy(&ctx, downstream, &mut rec).await {
        rec.fail(e);
    }
}

async fn proxy(ctx: &CoreCtx, downstream: TcpStream, rec: &mut ConnRecord) -> Result<(), Error> {
    let cfg = ctx.config();
    let dst = rec.dst.0;
    if OWN_PORTS.contains(&dst.port()) {
        super::reset(downstream);
        return Err(route::Denied::OwnPort(dst).into());
    }
    let snapshot = ctx.shared.snapshot.load_full();
    rec.src_workload = snapshot.workload_by_ip(rec.src.0.ip()).cloned();
    let Some(workload) = snapshot.workload_by_ip(dst.ip()).cloned() else {
        super::reset(downstream);
        return Err(Error::UnknownDestination(dst.ip()));
    };
    if *workload.node != *cfg.node_name {
        super::reset(downstream);
        return Err(Error::NotLocal(dst.ip()));
    }
    rec.dst_workload = Some(workload.clone());
    // Plaintext: no identity, whatever the source IP claims to be.
    let subject = Subject {
        src_identity: None,
        src_ip: rec.src.0.ip(),
        dst,
        dst_uid: workload.uid.clone(),
    };
    let registration = match super::authorize(ctx, &snapshot, subject, &workload) {
        Ok(r) => r,
        Err(e) => {
            super::reset(downstream);
            return Err(e);
        }
    };
    drop(snapshot);

    let upstream = match super::connect(
        dst,
        Some(rec.src.0.ip()),
        SpoofSide::Inbound,
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
    rec.upstream = Some(dst);
    rec.established();
    let fds = [downstream.as_raw_fd(), upstream.as_raw_fd()];
    let pump = copy::bidirectional(
        downstream.into_split(),
        upstream.into_split(),
        &ctx.buffers,
        &rec.counts,
    );
    super::until_revoked(std::pin::pin!(pump), &registration.kill, &fds).await
}
