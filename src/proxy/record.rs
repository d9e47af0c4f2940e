//! [`ConnRecord`]: what is known about one proxied connection, filled in phase by phase, and its
//! outcome recorded exactly once, when it is dropped: one access-log line and the Istio TCP
//! metrics on the core's shard (see `metrics` for the accounting).
//!
//! Runs on a core, owned by the connection's task. The phases, in the order a listener reaches
//! them: [`ConnRecord::new`] (accepted) → [`ConnRecord::requested`] (15008: the CONNECT target)
//! → [`ConnRecord::routed`] (the workloads and service) → [`ConnRecord::mutual_tls`] (the two
//! identities, HBONE only) → [`ConnRecord::established`] (upstream connected: counted opened
//! under the labels known so far) → [`ConnRecord::finished`]. A phase the path never reaches
//! leaves its fields unknown; the labels and the log say "unknown" for them. Nothing can change
//! the labels once the connection is counted opened.

use std::cell::{Cell, OnceCell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::{Capture, ClientAddr, ConnectTarget, Direction, Error, OrigDst};
use crate::core::CoreCtx;
use crate::identity::Identity;
use crate::metrics::labels::{self, NO_FLAGS};
use crate::metrics::{Conn, Flow, LabelsRef, LatencyKind, Meter, Reporter, SecurityPolicy, Series};
use crate::net::copy::Transferred;
use crate::state::{Service, Workload};

/// Everything known about one proxied connection; logs and counts its outcome once, when
/// dropped, whatever path ended it.
///
/// Metrics: [`ConnRecord::established`] counts the connection opened under its label set and
/// routes its byte counters into that series; `Drop` counts it closed (and failed, on error)
/// under the outcome's `response_flags`, opening it first if it never got that far. The core's
/// open-connections gauge covers the record's whole life.
#[derive(Debug)]
pub struct ConnRecord {
    direction: Direction,
    start: Instant,
    /// The TCP peer: a local pod (15001), a client (15006), or a peer node's zring (15008).
    src: Addr,
    /// The accepted socket's local address: what the client dialled (TPROXY keeps it). On 15008
    /// that is `<pod ip>:15008`, the tunnel's, not the stream's destination.
    orig_dst: Addr,
    /// 15008: the `ip:port` the CONNECT request asked for, once it parsed.
    target: Option<Addr>,
    src_workload: Option<Arc<Workload>>,
    dst_workload: Option<Arc<Workload>>,
    dst_service: Option<Arc<Service>>,
    /// The source's identity: the peer certificate's on inbound HBONE, the source workload's
    /// when zring presents its certificate on outbound HBONE. Set only on HBONE paths, so it
    /// also tells that the connection is mutual TLS.
    src_identity: Option<Identity>,
    /// The identity the destination proved (outbound HBONE) or that we presented (inbound).
    dst_identity: Option<Identity>,
    /// Where zring actually connected (the pod, or a peer's 15008), once it did.
    upstream: Option<Addr>,
    counts: Transferred,
    /// The first error; `None` when the connection ended normally. Boxed: an error is rare and
    /// comes at the end, and the record lives inside every connection's task (64 bytes
    /// inline, 8 boxed).
    error: RefCell<Option<Box<Error>>>,
    /// Whether the task got to [`ConnRecord::finished`]. A record dropped without it had its
    /// task dropped: in a pod, the pod's removal cutting it at the drain deadline.
    finished: Cell<bool>,
    /// How the connection was captured: in a pod, whether the pod was removed tells a cut.
    capture: Capture,
    /// The core's context: its metrics shard, and the snapshot for the inbound service guess.
    ctx: Rc<CoreCtx>,
    /// The series the connection was opened under (`response_flags="-"`), once it is.
    opened: OnceCell<Rc<Series>>,
}

impl ConnRecord {
    /// A connection just accepted (or, on 15008, a stream just received).
    pub fn new(
        ctx: &Rc<CoreCtx>,
        capture: &Capture,
        direction: Direction,
        src: ClientAddr,
        orig_dst: OrigDst,
    ) -> ConnRecord {
        ctx.metrics.connection_started();
        ConnRecord {
            direction,
            start: Instant::now(),
            src: src.0.into(),
            orig_dst: orig_dst.0.into(),
            target: None,
            src_workload: None,
            dst_workload: None,
            dst_service: None,
            src_identity: None,
            dst_identity: None,
            upstream: None,
            counts: Transferred::default(),
            error: RefCell::new(None),
            finished: Cell::new(false),
            capture: capture.clone(),
            ctx: ctx.clone(),
            opened: OnceCell::new(),
        }
    }

    pub fn src(&self) -> ClientAddr {
        ClientAddr(self.src.get())
    }

    pub fn orig_dst(&self) -> OrigDst {
        OrigDst(self.orig_dst.get())
    }

    /// Bytes moved so far, for the pump to add to.
    pub fn counts(&self) -> &Transferred {
        &self.counts
    }

    /// 15008: the stream asked for `target`.
    pub fn requested(&mut self, target: ConnectTarget) {
        self.before_established("requested");
        self.target = Some(target.0.into());
    }

    /// The connection is about these workloads and this service (each `None` when unknown).
    pub fn routed(
        &mut self,
        src_workload: Option<Arc<Workload>>,
        dst_workload: Option<Arc<Workload>>,
        dst_service: Option<Arc<Service>>,
    ) {
        self.before_established("routed");
        self.src_workload = src_workload;
        self.dst_workload = dst_workload;
        self.dst_service = dst_service;
    }

    /// The connection is tunnelled over mutual TLS: `src` is the client's identity, `dst` the
    /// server's (on 15008, the one we present).
    pub fn mutual_tls(&mut self, src: Identity, dst: Identity) {
        self.before_established("mutual_tls");
        self.src_identity = Some(src);
        self.dst_identity = Some(dst);
    }

    /// The upstream (`upstream`: the pod, or a peer's 15008) is connected: count the connection
    /// opened under what the earlier phases recorded, observe its setup time, and from now on
    /// count its bytes into its series as they flow. Inbound connections that did not name a
    /// service get the one they most likely used. Later calls do nothing.
    pub fn established(&mut self, upstream: SocketAddr) {
        if self.opened.get().is_some() {
            return;
        }
        self.upstream = Some(upstream.into());
        self.guess_service();
        self.open_series();
        let kind = match self.direction {
            Direction::Outbound => LatencyKind::SetupOutbound,
            Direction::Inbound => LatencyKind::SetupInbound,
        };
        self.ctx.metrics.observe(kind, self.start.elapsed());
    }

    /// The connection is over: `Err` records why (the first error recorded wins). The record
    /// itself logs and counts when dropped.
    pub fn finished(&self, result: Result<(), Error>) {
        self.finished.set(true);
        if let Err(e) = result {
            let mut slot = self.error.borrow_mut();
            if slot.is_none() {
                *slot = Some(Box::new(e));
            }
        }
    }

    /// The phases before `established` describe what the connection is counted under.
    fn before_established(&self, phase: &str) {
        debug_assert!(
            self.opened.get().is_none(),
            "ConnRecord::{phase} after the connection was counted opened"
        );
    }

    /// What the client asked to reach: the CONNECT target on 15008, else the original
    /// destination. The access log's `dst.addr`.
    fn destination(&self) -> SocketAddr {
        self.target.unwrap_or(self.orig_dst).get()
    }

    /// For an inbound connection that named no service, the one it most likely came through
    /// (before the labels are taken, whether the connection got established or not).
    fn guess_service(&mut self) {
        if self.direction == Direction::Inbound
            && self.dst_service.is_none()
            && self.opened.get().is_none()
            && let Some(w) = &self.dst_workload
        {
            let snapshot = self.ctx.shared.snapshot.load();
            self.dst_service =
                labels::guess_inbound_service(&snapshot, w, self.destination().port());
        }
    }

    /// The connection's opening series, counting it opened the first time.
    fn open_series(&self) -> &Rc<Series> {
        self.opened.get_or_init(|| {
            let series = self.ctx.metrics.series(&self.labels());
            series.open();
            self.counts
                .sent
                .attach(Meter::new(series.clone(), Flow::Request));
            self.counts
                .received
                .attach(Meter::new(series.clone(), Flow::Response));
            series
        })
    }

    /// The connection's metric labels, with `response_flags="-"`.
    fn labels(&self) -> LabelsRef<'_> {
        let mtls = self.src_identity.is_some();
        LabelsRef::new(&Conn {
            reporter: match self.direction {
                Direction::Outbound => Reporter::Source,
                Direction::Inbound => Reporter::Destination,
            },
            source: self.src_workload.as_deref(),
            source_principal: self.src_identity.as_ref().map(Identity::as_str),
            destination: self.dst_workload.as_deref(),
            destination_principal: self.dst_identity.as_ref().map(Identity::as_str),
            service: self.dst_service.as_deref(),
            security: if mtls {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::Unknown
            },
            response_flags: NO_FLAGS,
        })
    }

    /// Counts the outcome: closed (and failed, on error) under the outcome's flags.
    fn count_outcome(&self, flags: &'static str, failed: bool) {
        let opened = self.open_series();
        if flags == NO_FLAGS {
            opened.close(failed);
        } else {
            self.ctx
                .metrics
                .series(&self.labels().with_flags(flags))
                .close(failed);
        }
        self.ctx.metrics.connection_ended();
    }
}

impl Drop for ConnRecord {
    fn drop(&mut self) {
        let dur = self.start.elapsed();
        if !self.finished.get()
            && let Capture::Pod(pod) = &self.capture
            && pod.removed().is_fired()
        {
            // The pod's removal dropped this connection's task at the drain deadline: not a
            // clean completion.
            self.finished(Err(Error::PodRemoved));
        }
        if !self.finished.get()
            && std::thread::panicking()
            && let Ok(mut slot) = self.error.try_borrow_mut()
        {
            // Dropped by the unwinding of a panic in the connection's task (a second panic
            // here would abort the process, hence no plain borrow).
            slot.get_or_insert(Box::new(Error::Panicked));
        }
        self.guess_service();
        fn name(w: &Option<Arc<Workload>>) -> Option<&str> {
            w.as_deref().map(|w| &*w.name)
        }
        fn ns(w: &Option<Arc<Workload>>) -> Option<&str> {
            w.as_deref().map(|w| &*w.namespace)
        }
        // The identity proven or presented, else the one the workload runs as.
        let id = |i: &Option<Identity>, w: &Option<Arc<Workload>>| match (i, w) {
            (Some(i), _) => Some(i.to_string()),
            (None, Some(w)) => Identity::of_workload(w).ok().map(|i| i.to_string()),
            (None, None) => None,
        };
        let svc = self.dst_service.as_deref().map(|s| &*s.hostname);
        let error = self.error.borrow();
        let flags = error.as_deref().map_or(NO_FLAGS, Error::response_flag);
        self.count_outcome(flags, error.is_some());
        let duration = crate::logging::Millis(dur);
        macro_rules! access {
            ($lvl:ident, $err:expr, $flag:expr) => {
                $lvl!(
                    target: "access",
                    core = self.ctx.id,
                    "src.addr" = %self.src.get(),
                    "src.workload" = name(&self.src_workload),
                    "src.namespace" = ns(&self.src_workload),
                    "src.identity" = id(&self.src_identity, &self.src_workload),
                    "dst.addr" = %self.destination(),
                    "dst.hbone_addr" = self.upstream.map(|a| a.get().to_string()),
                    "dst.service" = svc,
                    "dst.workload" = name(&self.dst_workload),
                    "dst.namespace" = ns(&self.dst_workload),
                    "dst.identity" = id(&self.dst_identity, &self.dst_workload),
                    direction = self.direction.name(),
                    bytes_sent = self.counts.sent.get(),
                    bytes_recv = self.counts.received.get(),
                    response_flags = $flag,
                    duration = %duration,
                    error = $err,
                    "complete dur={dur:?}"
                )
            };
        }
        match error.as_ref() {
            None => access!(info, None::<String>, "-"),
            Some(e) => access!(warn, Some(e.to_string()), e.response_flag()),
        }
    }
}

/// A socket address in 20 bytes where `SocketAddr` takes 32: the IP and the port, without an
/// IPv6 address's flow label and scope id. Those are zero for the pod and node addresses a
/// record holds (a scope id is for link-local addresses, which mesh traffic does not use), and
/// a record, which lives as long as its connection, holds four addresses.
#[derive(Debug, Clone, Copy)]
struct Addr {
    ip: IpAddr,
    port: u16,
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl Addr {
    fn get(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}
