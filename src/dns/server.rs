//! The DNS proxy's per-core loops: one UDP socket and one TCP listener per place the core
//! serves (the node, or one pod), each read by one task.
//!
//! Every message goes through [`prepare`], top to bottom: read the header (a runt or a
//! response is dropped and counted: answering a response would let two resolvers loop) →
//! parse the query (malformed: FORMERR, counted) → only standard queries (NOTIMP), no TC bit
//! (FORMERR) → the client workload → `resolve::lookup`. A local answer is sent at once from
//! the receiving task; a forward is spawned for UDP (bounded per core by `max_inflight`: a
//! flood beyond it is dropped and counted, the client retries) and done in line for TCP.
//! Before anything, each message takes a token from its client's bucket, and each forward and
//! TCP connection one of its client's slots (`limit`): beyond, dropped and counted.
//!
//! UDP answers respect the client's size (512, or its EDNS size up to 4096): a larger local
//! answer goes out without records and with TC set, so the client asks again over TCP.
//! Upstream answers are relayed as they are (their TC bit included) with the client's id.
//! TCP connections carry any number of queries, one at a time, and close after 5 s without
//! one (ztunnel's request timeout).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::udp::UdpSocket;
use monoio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::resolve::{self, Lookup};
use super::upstream::{self, UdpUpstream};
use super::wire::{self, CLASS_IN, FLAG_TC, Query, Rcode, WireError};
use super::{CoreDns, DnsError, query_type_name};
use crate::core::CoreCtx;
use crate::inpod::pod::CorePod;
use crate::metrics::dns::{DnsCell, DnsLabels, Dropped};
use crate::state::Workload;
use crate::sys::socket::SpoofSide;

/// How long a TCP client may take to send its next query (ztunnel's 5 s).
pub const TCP_IDLE: Duration = Duration::from_secs(5);

/// Where the sockets are, which decides who the client is and where forwards leave from.
#[derive(Debug)]
pub enum Origin {
    /// The node's netns: the client is the workload owning the source IP.
    Node { mark: u32 },
    /// Inside this pod's netns: the client is the pod.
    Pod(Rc<CorePod>),
}

impl Origin {
    fn client(&self, snapshot: &crate::state::Snapshot, peer: SocketAddr) -> Option<Arc<Workload>> {
        match self {
            Origin::Node { .. } => snapshot.workload_by_ip(peer.ip()).cloned(),
            Origin::Pod(pod) => pod.workload(snapshot),
        }
    }

    /// Resolves once the sockets must close: the core drains, or (in-pod) the pod goes.
    pub async fn stopped(&self, ctx: &CoreCtx) {
        match self {
            Origin::Node { .. } => ctx.draining.wait().await,
            Origin::Pod(pod) => monoio::select! {
                () = ctx.draining.wait() => {}
                () = pod.removed().wait() => {}
            },
        }
    }

    async fn connect(&self, server: SocketAddr, timeout: Duration) -> Result<TcpStream, DnsError> {
        Ok(match self {
            Origin::Node { mark } => {
                crate::net::connect(server, None, SpoofSide::Outbound, *mark, timeout).await?
            }
            Origin::Pod(pod) => pod.connect(server, None, timeout).await?,
        })
    }
}

/// What to do with one message.
enum Step {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask the upstreams; the cell counts the forward.
    Forward(Box<(Query, Arc<DnsCell>)>),
    /// Nothing (counted).
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

fn error_reply(dns: &CoreDns, query: &Query, rcode: Rcode) -> Step {
    dns.metrics.error_answer(rcode as u8);
    Step::Reply(wire::response(query, rcode, false, &[], wire::MAX_UDP_SIZE))
}

/// Decides what `msg` from `peer` gets (see the module doc).
fn prepare(
    ctx: &CoreCtx,
    dns: &CoreDns,
    origin: &Origin,
    msg: &[u8],
    peer: SocketAddr,
    proto: Proto,
) -> Step {
    // First, so a flood costs no parsing.
    if dns.allow(peer.ip()).is_err() {
        return Step::Drop;
    }
    let header = match wire::Header::parse(msg) {
        Ok(h) => h,
        Err(_) => {
            dns.metrics.dropped(Dropped::Runt);
            return Step::Drop;
        }
    };
    if header.is_response() {
        dns.metrics.dropped(Dropped::Response);
        return Step::Drop;
    }
    let query = match Query::parse(msg) {
        Ok(q) => q,
        Err(e) => return malformed(dns, msg, e),
    };
    if header.opcode() != 0 {
        dns.metrics.dropped(Dropped::Malformed("opcode"));
        return error_reply(dns, &query, Rcode::NotImp);
    }
    if header.flags & FLAG_TC != 0 {
        dns.metrics.dropped(Dropped::Malformed("tc_query"));
        return error_reply(dns, &query, Rcode::FormErr);
    }
    let snapshot = ctx.shared.snapshot.load();
    let client = origin.client(&snapshot, peer);
    let labels = DnsLabels {
        query_type: query_type_name(query.question.qtype),
        protocol: proto.name(),
        source_canonical_service: client
            .as_ref()
            .map_or_else(|| "".into(), |w| w.canonical_name.clone()),
        source_canonical_revision: client
            .as_ref()
            .map_or_else(|| "".into(), |w| w.canonical_revision.clone()),
    };
    let cell = dns.metrics.cell(&labels);
    cell.request();
    let lookup = match &client {
        Some(w) if query.question.qclass == CLASS_IN => resolve::lookup(
            &snapshot,
            w,
            &query.question.name,
            query.question.qtype,
            &dns.settings,
            ctx.random(),
        ),
        _ => Lookup::Forward,
    };
    match lookup {
        Lookup::Answer(records) => {
            let limit = match proto {
                Proto::Udp => query.udp_limit(),
                Proto::Tcp => wire::MAX_TCP_SIZE,
            };
            debug!(
                name = %query.question.name.display(),
                qtype = query_type_name(query.question.qtype),
                records = records.len(),
                "dns: answered from the mesh"
            );
            Step::Reply(wire::response(
                &query,
                Rcode::NoError,
                true,
                &records,
                limit,
            ))
        }
        Lookup::Forward => Step::Forward(Box::new((query, cell))),
    }
}

/// FORMERR for a message with a readable header that is no valid query, counted by reason.
fn malformed(dns: &CoreDns, msg: &[u8], e: WireError) -> Step {
    dns.metrics.dropped(Dropped::Malformed(e.reason()));
    match wire::bare_error(msg, Rcode::FormErr) {
        Some(reply) => {
            dns.metrics.error_answer(Rcode::FormErr as u8);
            Step::Reply(reply)
        }
        None => Step::Drop,
    }
}

/// Spawns the node-mode DNS tasks of a core on `sockets` (bound in the node's netns); they end
/// when the core drains.
pub fn spawn_node(
    ctx: &Rc<CoreCtx>,
    dns: &Rc<CoreDns>,
    sockets: crate::inpod::factory::DnsSockets,
) -> Vec<monoio::task::JoinHandle<()>> {
    let origin = Rc::new(Origin::Node {
        mark: ctx.config().packet_mark,
    });
    let mut tasks = Vec::new();
    match UdpUpstream::new(sockets.upstream) {
        Ok(up) => tasks.push(monoio::spawn(serve_udp(
            ctx.clone(),
            dns.clone(),
            origin.clone(),
            sockets.udp,
            Rc::new(up),
        ))),
        Err(e) => warn!(
            core = ctx.id,
            "DNS proxy: cannot register the upstream socket: {e}"
        ),
    }
    tasks.push(monoio::spawn(serve_tcp(
        ctx.clone(),
        dns.clone(),
        origin,
        sockets.tcp,
    )));
    tasks
}

/// Serves one UDP socket until `origin` stops: answers in line, forwards in spawned tasks
/// through `upstream`, whose reader runs beside it for as long.
pub async fn serve_udp(
    ctx: Rc<CoreCtx>,
    dns: Rc<CoreDns>,
    origin: Rc<Origin>,
    socket: std::net::UdpSocket,
    upstream: Rc<UdpUpstream>,
) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            warn!(
                core = ctx.id,
                "DNS proxy: cannot register the UDP socket: {e}"
            );
            return;
        }
    };
    let reader = {
        let (ctx, dns, origin, upstream) =
            (ctx.clone(), dns.clone(), origin.clone(), upstream.clone());
        monoio::spawn(async move {
            upstream
                .read_answers(&dns.metrics, origin.stopped(&ctx))
                .await;
        })
    };
    let mut stop = std::pin::pin!(origin.stopped(&ctx));
    let mut buf: Vec<u8> = Vec::with_capacity(wire::MAX_TCP_SIZE);
    loop {
        buf.clear();
        let (res, back) = monoio::select! {
            r = socket.recv_from(buf) => r,
            () = &mut stop => break,
        };
        buf = back;
        let (n, peer) = match res {
            Ok(r) => r,
            Err(e) => {
                debug!(core = ctx.id, "DNS proxy: UDP receive failed: {e}");
                continue;
            }
        };
        let msg = &buf[..n.min(buf.len())];
        match prepare(&ctx, &dns, &origin, msg, peer, Proto::Udp) {
            Step::Drop => {}
            Step::Reply(reply) => {
                let (r, _) = socket.send_to(reply, peer).await;
                if let Err(e) = r {
                    debug!(core = ctx.id, %peer, "DNS proxy: UDP send failed: {e}");
                }
            }
            Step::Forward(job) => {
                let Ok(slot) = dns.admit(peer.ip()) else {
                    continue;
                };
                let (query, cell) = *job;
                let msg = msg.to_vec();
                let (ctx, dns, socket, upstream, origin) = (
                    ctx.clone(),
                    dns.clone(),
                    socket.clone(),
                    upstream.clone(),
                    origin.clone(),
                );
                crate::task::spawn("dns_udp_query", async move {
                    let _slot = slot;
                    let answered = async {
                        let answer = forward(&dns, &cell, &query, || async {
                            forward_udp(&ctx, &dns, &upstream, &msg, &query).await
                        })
                        .await;
                        let (r, _) = socket.send_to(answer, peer).await;
                        if let Err(e) = r {
                            debug!(%peer, "DNS proxy: UDP send failed: {e}");
                        }
                    };
                    // A removed pod's (or a drained core's) socket closes now, not once the
                    // forwards it started have timed out.
                    monoio::select! {
                        () = answered => {}
                        () = origin.stopped(&ctx) => {}
                    }
                });
            }
        }
    }
    drop(reader);
}

/// Tries each upstream in order over UDP.
async fn forward_udp(
    ctx: &CoreCtx,
    dns: &CoreDns,
    upstream: &UdpUpstream,
    msg: &[u8],
    query: &Query,
) -> Result<Vec<u8>, DnsError> {
    let mut last = DnsError::NoUpstream;
    for server in &dns.upstreams {
        match upstream
            .forward(*server, msg, query, ctx.random(), dns.upstream_timeout)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs one forward (`attempt`), counts it, and turns a failure into SERVFAIL.
async fn forward<F, Fut>(dns: &CoreDns, cell: &DnsCell, query: &Query, attempt: F) -> Vec<u8>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, DnsError>>,
{
    cell.forwarded();
    let started = Instant::now();
    let result = attempt().await;
    cell.forward_took(started.elapsed());
    match result {
        Ok(answer) => answer,
        Err(e) => {
            cell.forward_failed();
            debug!(name = %query.question.name.display(), "DNS proxy: forwarding failed: {e}");
            dns.metrics.error_answer(Rcode::ServFail as u8);
            wire::response(query, Rcode::ServFail, false, &[], wire::MAX_UDP_SIZE)
        }
    }
}

/// Accepts TCP clients until `origin` stops; each connection is its own task.
pub async fn serve_tcp(
    ctx: Rc<CoreCtx>,
    dns: Rc<CoreDns>,
    origin: Rc<Origin>,
    listener: std::net::TcpListener,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(
                core = ctx.id,
                "DNS proxy: cannot register the TCP listener: {e}"
            );
            return;
        }
    };
    let mut stop = std::pin::pin!(origin.stopped(&ctx));
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            () = &mut stop => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = dns.admit(peer.ip()) else {
                    drop(stream);
                    continue;
                };
                let (ctx, dns, origin) = (ctx.clone(), dns.clone(), origin.clone());
                crate::task::spawn("dns_tcp", async move {
                    let _slot = slot;
                    tcp_connection(&ctx, &dns, &origin, stream, peer).await;
                });
            }
            Err(e) => {
                warn!(core = ctx.id, "DNS proxy: accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One TCP client: length-prefixed queries, one at a time, until it goes quiet or closes.
async fn tcp_connection(
    ctx: &CoreCtx,
    dns: &CoreDns,
    origin: &Origin,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    loop {
        let read = async {
            let (r, len) = stream.read_exact(vec![0u8; 2]).await;
            r?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 {
                return Ok(None);
            }
            let (r, msg) = stream.read_exact(vec![0u8; len]).await;
            r?;
            Ok::<_, std::io::Error>(Some(msg))
        };
        let msg = match monoio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(Some(msg))) => msg,
            Ok(Ok(None)) => {
                dns.metrics.dropped(Dropped::TcpFraming);
                return;
            }
            // A clean close between queries is the normal end; one inside a message or a
            // silent client is not worth a counter of its own beyond the framing one.
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    dns.metrics.dropped(Dropped::TcpFraming);
                }
                return;
            }
            Err(_) => return,
        };
        let reply = match prepare(ctx, dns, origin, &msg, peer, Proto::Tcp) {
            Step::Drop => continue,
            Step::Reply(reply) => reply,
            Step::Forward(job) => {
                let (query, cell) = *job;
                forward(dns, &cell, &query, || async {
                    let mut last = DnsError::NoUpstream;
                    for server in &dns.upstreams {
                        let attempt = async {
                            let conn = origin.connect(*server, dns.upstream_timeout).await?;
                            upstream::forward_tcp(conn, *server, &msg, &query, dns.upstream_timeout)
                                .await
                        };
                        match attempt.await {
                            Ok(answer) => return Ok(answer),
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                })
                .await
            }
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len().min(wire::MAX_TCP_SIZE) as u16).to_be_bytes());
        out.extend_from_slice(&reply[..reply.len().min(wire::MAX_TCP_SIZE)]);
        let (r, _) = stream.write_all(out).await;
        if r.is_err() {
            return;
        }
    }
}
