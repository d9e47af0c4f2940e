//! 15001: connections captured from pods on this node, original destination preserved.
//!
//! Runs on a core, one task per connection: prepare (route with `route::outbound`, a pure
//! function, resolving a hostname endpoint through the core's DNS (`dns::ondemand`) and routing
//! again; authorize a same-node destination; connect upstream, over TCP or an HBONE tunnel)
//! → answer (a refusal resets the client; success has nothing to send) → pump → record.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use monoio::net::TcpStream;
use tracing::{debug, info};

use super::route::{self, Action, Route};
use super::{Capture, ClientAddr, ConnRecord, Direction, Error, Listener, TcpUpstream};
use crate::core::CoreCtx;
use crate::core::conns::Subject;
use crate::hbone::HboneError;
use crate::hbone::client::Dial;
use crate::hbone::headers::{self, TraceParent};
use crate::hbone::pool::{Lease, PoolKey};
use crate::hbone::pump;
use crate::identity::Identity;
use crate::net::Side;
use crate::state::Workload;
use crate::sys::socket::SpoofSide;

/// Serves one captured connection: the returned future is its task.
///
/// Not an `async fn`: an `async fn` keeps its arguments for its whole life beside what they are
/// moved into, and an idle connection's task is mostly what it keeps. The block below captures
/// each argument once, and the pump's inputs reach it through a plain function, so the task
/// holds the pump, the record and little else while the connection lives
/// (`tests/idle_sizes.rs`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments beside what they are moved into"
)]
pub fn serve(
    ctx: Rc<CoreCtx>,
    capture: Capture,
    downstream: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    async move {
        let Some(dst) = capture.orig_dst(&ctx, &downstream, Listener::Outbound) else {
            return;
        };
        // Counted from accept, so a drain waits for connections still being set up too.
        let _active = ctx.track();
        let mut rec = ConnRecord::new(&ctx, &capture, Direction::Outbound, ClientAddr(peer), dst);
        // Boxed, and gone once connected: routing's state is larger than the pump's, and an
        // idle connection's task would carry it for its whole life (`tests/idle_sizes.rs`).
        let prepared = Box::pin(prepare(&ctx, &capture, &mut rec)).await;
        let Some(mut pumping) = start(&ctx, prepared, downstream, &rec) else {
            return;
        };
        // Polled where it lies: moved out of `pumping`, the pump would be stored twice.
        let result = match &mut pumping {
            Pumping::Tcp(pump) => pump.as_mut().await,
            Pumping::Hbone(pump, _lease) => pump.await.map_err(Error::from),
        };
        drop(pumping);
        rec.finished(result);
    }
}

/// A prepared connection's pump; the lease of an HBONE stream's pooled connection stays with
/// the task while the stream lives.
enum Pumping<'c> {
    /// Boxed: the plaintext copy's state is the largest; unboxed, every task (HBONE's too)
    /// would be that size.
    Tcp(Pin<Box<dyn Future<Output = Result<(), Error>> + 'c>>),
    Hbone(pump::Pump<'c>, Lease),
}

/// Builds the pump between the client (`downstream`) and what `prepared` connected to, or
/// refuses the client (`None`). A plain function: its arguments and what it takes apart stay
/// out of the task's state.
fn start<'c>(
    ctx: &'c CoreCtx,
    prepared: Result<Upstream<'c>, Error>,
    downstream: TcpStream,
    rec: &'c ConnRecord,
) -> Option<Pumping<'c>> {
    match prepared {
        Ok(Upstream::Tcp(tcp)) => Some(Pumping::Tcp(Box::pin(tcp.pump(ctx, downstream, rec)))),
        Ok(Upstream::Hbone(Tunnel { lease, send, recv })) => {
            // The socket is the client's (downstream); the stream leads upstream.
            let counts = rec.counts();
            let pump = pump::bidirectional(
                downstream,
                send,
                recv,
                (Side::Downstream, Side::Upstream),
                ctx.buffers.large_size(),
                (&counts.sent, &counts.received),
            );
            Some(Pumping::Hbone(pump, lease))
        }
        Err(e) => {
            super::refuse(downstream, rec, e);
            None
        }
    }
}

/// Lookups (and routings) one connection may go through for hostname endpoints.
const RESOLVE_ROUNDS: usize = 3;

/// Routing's view of this core's DNS cache (`dns::ondemand`): answers only what is cached.
struct CachedDns<'a> {
    dns: &'a crate::dns::ondemand::OnDemand,
    /// Picks among several addresses; the same for every routing of one connection.
    random: u64,
}

impl route::Resolve for CachedDns<'_> {
    fn resolve(&self, hostname: &str, want_v6: bool) -> Option<std::net::IpAddr> {
        self.dns.cached(hostname, want_v6, self.random)
    }
}

/// Where a prepared connection's bytes go.
enum Upstream<'c> {
    Tcp(TcpUpstream<'c>),
    Hbone(Tunnel),
}

/// Routes, authorizes (same node only) and connects; the client is not touched.
async fn prepare<'c>(
    ctx: &'c CoreCtx,
    capture: &Capture,
    rec: &mut ConnRecord,
) -> Result<Upstream<'c>, Error> {
    let mut snapshot = ctx.shared.snapshot.load_full();
    let (src, dst) = (rec.src().0, rec.orig_dst().0);
    let node = capture.route_node(ctx);
    // zring's own ports: on the node's addresses in node mode; in a pod, the proxy ports on the
    // pod's own address (the source of whatever its outbound listener accepts).
    let own = match capture {
        Capture::Node => ctx.shared.own_addrs.load_full(),
        Capture::Pod(_) => Arc::new(route::OwnAddrs::pod([src.ip()])),
    };
    // Endpoints addressed by hostname: answered from this core's DNS cache; a name not cached
    // is resolved below and the connection routed again.
    let dns = crate::dns::ondemand::for_core(ctx);
    let random = ctx.random();
    let mut route = {
        let resolver = CachedDns { dns: &dns, random };
        route::outbound(&snapshot, node, &own, src.ip(), dst, random, &resolver)
    };
    // In a pod the source is the pod itself, whatever the snapshot maps its IP to. A source
    // the snapshot does not have yet (a pod newer than it) is waited for, bounded.
    let unknown = matches!(route, Err(route::Denied::UnknownSource(_)));
    let mut source = None;
    if unknown || matches!(capture, Capture::Pod(_)) {
        let seen = Arc::as_ptr(&snapshot);
        let found = capture.source_workload(ctx, &mut snapshot, src).await?;
        // Routed again from that workload when it is not the one routed from (the endpoint
        // choice weighs the source's locality and network) or the snapshot moved on.
        let same = matches!(&route, Ok(r) if Arc::ptr_eq(&r.source, &found));
        if unknown || !same || !std::ptr::eq(seen, Arc::as_ptr(&snapshot)) {
            let resolver = CachedDns { dns: &dns, random };
            route =
                route::outbound_from(&snapshot, node, &own, found.clone(), dst, random, &resolver);
        }
        source = Some(found);
    }
    // A hostname endpoint with nothing cached: resolve it (this core's lookup, shared with the
    // connections waiting for the same name, bounded by the upstream timeouts), then route
    // again with the same random input, which picks the same endpoint. A few rounds at most:
    // a snapshot change could pick another hostname endpoint in between.
    for _ in 0..RESOLVE_ROUNDS {
        let Err(route::Denied::Unroutable(route::Unroutable::Unresolved { workload, hostname })) =
            &route
        else {
            break;
        };
        if let Err(reason) = dns.resolve(hostname, dst.is_ipv6(), ctx.random()).await {
            route = Err(route::Denied::DnsFailed {
                workload: workload.clone(),
                hostname: hostname.clone(),
                reason,
            });
            break;
        }
        let resolver = CachedDns { dns: &dns, random };
        route = match &source {
            Some(s) => {
                route::outbound_from(&snapshot, node, &own, s.clone(), dst, random, &resolver)
            }
            None => route::outbound(&snapshot, node, &own, src.ip(), dst, random, &resolver),
        };
    }
    let route = route?;
    log_choice(ctx, &route, src, dst);
    rec.routed(
        Some(route.source.clone()),
        route.dst_workload.clone(),
        route.dst_service.clone(),
    );
    let target = match route.action {
        Action::Hbone {
            via,
            authority,
            kind,
            ref peer,
        } => {
            info!(
                core = ctx.id,
                "proxy to {dst} using HBONE via {via} type {kind}"
            );
            drop(snapshot);
            // Boxed, and gone once the stream is open: the pool checkout (dial, TLS handshake,
            // h2 handshake) is several KiB of state that an idle connection's task would
            // otherwise carry for its whole life (`cargo rustc -- -Zprint-type-sizes` shows
            // each task's size).
            let tunnel = Box::pin(tunnel(ctx, capture, rec, &route, peer, via, authority)).await?;
            return Ok(Upstream::Hbone(tunnel));
        }
        Action::Passthrough(a) | Action::Direct(a) | Action::DirectLocal(a) => a,
    };
    if matches!(route.action, Action::Passthrough(_)) {
        let allow = ctx.config().passthrough_allow_local;
        super::local_reach::check(capture, allow, &own, target)?;
    }
    let kind = route.action.kind();
    info!(core = ctx.id, "proxy to {target} using TCP type {kind}");
    // A pod on this node: no zring on the way in, so this core enforces the destination's
    // policies itself, with the source's identity (zring knows its own pods).
    let registration =
        if let (Action::DirectLocal(_), Some(w)) = (&route.action, &route.dst_workload) {
            let subject = Subject {
                src_identity: super::workload_identity(&route.source).ok(),
                src_ip: src.ip(),
                dst: target,
                dst_uid: w.uid.clone(),
            };
            Some(super::authorize(ctx, &snapshot, subject, w)?)
        } else {
            None
        };
    drop(snapshot);
    let upstream =
        TcpUpstream::connect(ctx, capture, rec, target, SpoofSide::Outbound, registration);
    Ok(Upstream::Tcp(upstream.await?))
}

/// The endpoint choice, at debug level: which endpoint of which service, and why (the tier the
/// locality preferences selected, out of how many eligible endpoints).
fn log_choice(ctx: &CoreCtx, route: &Route, src: SocketAddr, dst: SocketAddr) {
    let Some(service) = &route.dst_service else {
        return;
    };
    match (&route.choice, &route.dst_workload) {
        (Some(c), Some(endpoint)) => debug!(
            core = ctx.id,
            src.addr = %src,
            dst.addr = %dst,
            dst.service = %service.hostname,
            endpoint = %endpoint.uid,
            mode = ?c.mode,
            matched = c.matched,
            preferences = c.preferences,
            tier = c.tier,
            eligible = c.eligible,
            "endpoint chosen"
        ),
        _ if matches!(route.action, Action::Passthrough(_)) => debug!(
            core = ctx.id,
            src.addr = %src,
            dst.addr = %dst,
            dst.service = %service.hostname,
            "service load balancing is PASSTHROUGH: connecting to the original destination"
        ),
        _ => {}
    }
}

/// An open HBONE stream to the destination (or its waypoint), and the pooled connection
/// carrying it.
struct Tunnel {
    lease: Lease,
    send: h2::SendStream<bytes::Bytes>,
    recv: h2::RecvStream,
}

/// Opens an HBONE stream to `via` (the destination pod's or its waypoint's 15008) asking for
/// `authority`, presenting the source's certificate and accepting only `peer`'s identity (plus
/// the service's extra SANs when the destination was reached through its VIP).
async fn tunnel(
    ctx: &CoreCtx,
    capture: &Capture,
    rec: &mut ConnRecord,
    route: &Route,
    peer: &Workload,
    via: SocketAddr,
    authority: SocketAddr,
) -> Result<Tunnel, Error> {
    let cfg = ctx.config();
    let source_id = super::workload_identity(&route.source)?;
    let peer_id = super::workload_identity(peer)?;
    rec.mutual_tls(source_id.clone(), peer_id.clone());
    let expected = expected_identities(route, peer, peer_id);
    if !super::certificate_ready(ctx, &source_id).await {
        return Err(HboneError::NoCertificate(source_id).into());
    }
    let store = ctx.shared.certs.load();
    let config = ctx
        .tls
        .client(&store, &source_id, &expected)
        .map_err(HboneError::Config)?;
    drop(store);
    let src = rec.src().0;
    let key = PoolKey {
        source: source_id,
        expected: expected.into(),
        dst: via,
        source_ip: Some(src.ip()),
        pod: capture.pod_uid(),
    };
    let dial = Dial {
        via,
        source_ip: key.source_ip,
        mark: cfg.packet_mark,
        timeout: cfg.connect_timeout,
        driver: ctx.driver,
    };
    // A pooled connection can turn out to be going away (the peer drains, or died) only when a
    // stream is tried on it; then one fresh attempt, which dials if need be.
    let mut retried = false;
    loop {
        let connect = || capture.connect(ctx, via, src, SpoofSide::Outbound);
        let lease = ctx.pool.checkout(&key, dial, &config, connect).await?;
        let trace = TraceParent::new(ctx.random(), ctx.random(), ctx.random());
        let request = headers::connect_request(authority, src, &route.source, trace);
        match lease.open(request, cfg.connect_timeout).await {
            Ok((send, recv)) => {
                rec.established(via);
                return Ok(Tunnel { lease, send, recv });
            }
            Err(HboneError::Retryable(e)) if !retried => {
                debug!(core = ctx.id, peer = %via, "retrying on a new HBONE connection: {e}");
                retried = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The identities the peer may prove: its own, plus the service's extra SANs when the peer is
/// the destination reached through its service (they vouch for its endpoints, not for a
/// waypoint in front of it).
fn expected_identities(route: &Route, peer: &Workload, peer_id: Identity) -> Vec<Identity> {
    let mut expected = vec![peer_id];
    if let Some(svc) = &route.dst_service
        && route
            .dst_workload
            .as_ref()
            .is_some_and(|w| w.uid == peer.uid)
    {
        expected.extend(
            svc.subject_alt_names
                .iter()
                .filter_map(|s| Identity::parse(s).ok()),
        );
    }
    expected
}
