//! 15006: plaintext connections to pods on this node, captured on arrival (node mode: TPROXY;
//! in a pod: its rules REDIRECT).
//!
//! Runs on a core, one task per connection: prepare (the original destination must be a
//! workload this capture serves: on this node, or in a pod the pod itself; authorization,
//! `rbac`, decides with no source identity, since plaintext proves none; connect to the pod as
//! the [`Capture`] makes sockets: node mode from the client's own IP, IP_TRANSPARENT, so the
//! pod sees the real client; in a pod from inside its netns) → answer (a refusal resets the
//! client) → pump (until done, or until a policy change revokes the connection) → record.

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::{Capture, ClientAddr, ConnRecord, Direction, Error, Listener, TcpUpstream, route};
use crate::config::OWN_PORTS;
use crate::core::CoreCtx;
use crate::core::conns::Subject;
use crate::sys::socket::SpoofSide;

pub async fn serve(ctx: Rc<CoreCtx>, capture: Capture, downstream: TcpStream, peer: SocketAddr) {
    let Some(dst) = capture.orig_dst(&ctx, &downstream, Listener::InboundPlaintext) else {
        return;
    };
    let _active = ctx.track();
    let mut rec = ConnRecord::new(&ctx, &capture, Direction::Inbound, ClientAddr(peer), dst);
    let upstream = match prepare(&ctx, &capture, &mut rec).await {
        Ok(upstream) => upstream,
        Err(e) => return super::refuse(downstream, &rec, e),
    };
    let result = upstream.pump(&ctx, downstream, &rec).await;
    rec.finished(result);
}

/// Checks the destination, authorizes and connects; the client is not touched.
async fn prepare<'c>(
    ctx: &'c CoreCtx,
    capture: &Capture,
    rec: &mut ConnRecord,
) -> Result<TcpUpstream<'c>, Error> {
    let dst = rec.orig_dst().0;
    if OWN_PORTS.contains(&dst.port()) {
        return Err(route::Denied::OwnPort(dst).into());
    }
    let mut snapshot = ctx.shared.snapshot.load_full();
    let workload = capture.local_workload(ctx, &mut snapshot, dst).await;
    let src_workload = snapshot.workload_by_ip(rec.src().0.ip()).cloned();
    rec.routed(src_workload, workload.as_ref().ok().cloned(), None);
    let workload = workload?;
    // Plaintext: no identity, whatever the source IP claims to be.
    let subject = Subject {
        src_identity: None,
        src_ip: rec.src().0.ip(),
        dst,
        dst_uid: workload.uid.clone(),
    };
    let registration = super::authorize(ctx, &snapshot, subject, &workload)?;
    drop(snapshot);
    let registration = Some(registration);
    TcpUpstream::connect(ctx, capture, rec, dst, SpoofSide::Inbound, registration).await
}
