//! What one core's HBONE server (15008) lets clients hold: connections per peer address and in
//! all, concurrent streams per client identity, and the receive-window budget every
//! connection's HTTP/2 flow-control window is reserved from.
//!
//! Runs on a core: one [`Gate`] per core (`Rc`, `Cell`, no lock: cores share nothing, so a
//! process-wide limit is split evenly between them, and a core may refuse while another has
//! room). Permits are RAII: a connection or stream gives its place back when it ends, however
//! it ends.
//!
//! ## The receive budget
//!
//! HTTP/2 lets a client send as much as the receive windows we advertised before we read a
//! byte; what a destination does not take stays in h2's buffers. A connection's window is the
//! most it can make us buffer, so the budget is spent on windows, not on bytes. Every
//! connection starts at the protocol's [`FLOOR`] (65,535 bytes for the connection and for each
//! stream, as if we had sent no setting): part of a connection's fixed cost, bounded by the
//! connection caps, never reserved. Above it, windows are reserved from the budget, and only
//! a connection whose destinations drain gets them: it climbs one of the [`LEVELS`] once it
//! has received [`GROW_TURNS`] connection windows, and as many stream windows per open
//! stream, within [`GROW_WITHIN`] (see [`Climb`]). A destination that stops reading still takes what the kernel's socket buffers
//! hold (about 0.8 MiB per stream on loopback, measured in `perf/hostile.md`), then stops its
//! stream; [`GROW_TURNS`] floor windows is more than that, so a stalled stream never proves
//! anything, whatever it absorbed in its first burst, and a trickle does not add up over time
//! either. A connection denied growth tries again after as many bytes again, so it takes
//! budget freed by others as soon as it is free. One connection never reserves more than an
//! equal share of its core's budget among the connections that hold a reservation
//! ([`Gate::budget`]), so a few early climbers do not leave nothing to later ones.
//!
//! A reservation is kept until its connection closes: an advertised window cannot be taken
//! back, and a quiet client may still send all of it. The stream window stays a quarter of the
//! connection's above the floor, as in ztunnel's settings (4 MiB of 16 MiB), so one stalled
//! stream cannot block its connection's other streams; at the floor both are the protocol's.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::HboneLimits;
use crate::identity::Identity;
use crate::metrics::{Refusal, Shard, hbone::HboneGauges};

/// (connection window, stream window) of each level; a connection climbs one level at a time.
/// The last is ztunnel's (16 MiB, 4 MiB), so a busy ztunnel client gets its usual windows.
pub const LEVELS: [(u32, u32); 7] = [
    (256 << 10, 64 << 10),
    (512 << 10, 128 << 10),
    (1 << 20, 256 << 10),
    (2 << 20, 512 << 10),
    (4 << 20, 1 << 20),
    (8 << 20, 2 << 20),
    (16 << 20, 4 << 20),
];
/// Every connection's first windows: HTTP/2's initial window (RFC 9113 6.9.2), for the
/// connection and for each stream, which a client may always fill. Not reserved: part of a
/// connection's fixed cost, bounded by the connection caps; levels reserve what they add.
pub const FLOOR: (u32, u32) = (65_535, 65_535);
/// A connection climbs a level once it received this many of its connection windows, and of
/// its stream windows per open stream: more than a stalled stream's first burst into the
/// kernel's buffers.
pub const GROW_TURNS: u64 = 32;
/// ...within this long from the last climb (or the last start of the count): a connection that
/// takes longer is not limited by its window, so a bigger one would not help it.
pub const GROW_WITHIN: Duration = Duration::from_secs(1);

/// One core's admission state. Build once per core with [`Gate::new`].
#[derive(Debug)]
pub struct Gate {
    pub limits: HboneLimits,
    /// This core's share of `max_connections`.
    max_connections: u32,
    /// This core's share of `receive_budget`.
    budget: u64,
    peers: RefCell<HashMap<IpAddr, u32>>,
    open: Cell<u32>,
    identities: RefCell<HashMap<Identity, u32>>,
    reserved: Cell<u64>,
    /// Windows holding a reservation (the equal share's divisor).
    holders: Cell<u64>,
    metrics: Rc<Shard>,
}

impl Gate {
    /// The gate of one of `cores` cores.
    pub fn new(limits: HboneLimits, cores: usize, metrics: Rc<Shard>) -> Gate {
        let cores = cores.max(1) as u64;
        let max_connections = u64::from(limits.max_connections).div_ceil(cores) as u32;
        let budget = limits.receive_budget.div_ceil(cores);
        HboneGauges::set(&metrics.hbone().budget_bytes, budget);
        Gate {
            limits,
            max_connections,
            budget,
            peers: RefCell::default(),
            open: Cell::new(0),
            identities: RefCell::default(),
            reserved: Cell::new(0),
            holders: Cell::new(0),
            metrics,
        }
    }

    /// A place for a new connection from `peer`, or why not (counted).
    pub fn admit(self: &Rc<Self>, peer: IpAddr) -> Result<ConnPermit, Refusal> {
        let refused = if self.open.get() >= self.max_connections {
            Some(Refusal::ConnectionLimit)
        } else if self.peers.borrow().get(&peer).copied().unwrap_or(0)
            >= self.limits.max_connections_per_peer
        {
            Some(Refusal::PeerLimit)
        } else {
            None
        };
        if let Some(why) = refused {
            self.metrics.hbone_refused(why);
            return Err(why);
        }
        *self.peers.borrow_mut().entry(peer).or_default() += 1;
        self.set_open(self.open.get() + 1);
        Ok(ConnPermit {
            gate: self.clone(),
            peer,
        })
    }

    /// A place for a new stream of `identity`, or `None` (counted): refuse it.
    pub fn stream(self: &Rc<Self>, identity: &Identity) -> Option<StreamPermit> {
        let mut ids = self.identities.borrow_mut();
        let n = ids.get(identity).copied().unwrap_or(0);
        if n >= self.limits.max_streams_per_identity {
            HboneGauges::count(&self.metrics.hbone().streams_refused_identity);
            return None;
        }
        match ids.get_mut(identity) {
            Some(n) => *n += 1,
            None => {
                ids.insert(identity.clone(), 1);
            }
        }
        Some(StreamPermit {
            gate: self.clone(),
            identity: identity.clone(),
        })
    }

    /// Counts a tunnel closed for idleness.
    pub fn closed_idle(&self) {
        HboneGauges::count(&self.metrics.hbone().closed_idle);
    }

    /// Bytes reserved now, and the budget (this core's share).
    pub fn budget(&self) -> (u64, u64) {
        (self.reserved.get(), self.budget)
    }

    /// Raises a window's reservation from `held` to `to`, if the budget has room and `to` is
    /// within an equal share of it among the windows holding one (this one counted).
    fn reserve(&self, held: u64, to: u64) -> bool {
        let holders = self.holders.get() + u64::from(held == 0);
        let now = self.reserved.get();
        if now - held + to > self.budget || to > self.budget / holders {
            return false;
        }
        self.holders.set(holders);
        self.set_reserved(now - held + to);
        true
    }

    /// Lowers a window's reservation from `held` to `to`.
    fn unreserve(&self, held: u64, to: u64) {
        if held > 0 && to == 0 {
            self.holders.set(self.holders.get() - 1);
        }
        self.set_reserved(self.reserved.get() - held + to);
    }

    fn set_reserved(&self, n: u64) {
        self.reserved.set(n);
        HboneGauges::set(&self.metrics.hbone().reserved_bytes, n);
    }

    fn set_open(&self, n: u32) {
        self.open.set(n);
        HboneGauges::set(&self.metrics.hbone().connections, u64::from(n));
    }
}

/// A connection's place in its [`Gate`], given back on drop.
#[derive(Debug)]
pub struct ConnPermit {
    gate: Rc<Gate>,
    peer: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut peers = self.gate.peers.borrow_mut();
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
        drop(peers);
        self.gate.set_open(self.gate.open.get() - 1);
    }
}

/// A stream's place in its identity's count, given back on drop.
#[derive(Debug)]
pub struct StreamPermit {
    gate: Rc<Gate>,
    identity: Identity,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut ids = self.gate.identities.borrow_mut();
        if let Some(n) = ids.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                ids.remove(&self.identity);
            }
        }
    }
}

/// One connection's receive windows and their reservation (see the module doc).
#[derive(Debug)]
pub struct Window {
    gate: Option<Rc<Gate>>,
    /// Index into [`LEVELS`]; `None`: [`FLOOR`].
    level: Cell<Option<usize>>,
    reserved: Cell<u64>,
}

/// What [`Window::grow`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// Reserved: apply these (connection, stream) windows.
    To(u32, u32),
    /// The budget has no room now (counted).
    Denied,
    /// Already at the top.
    Top,
}

impl Window {
    /// A new connection's windows: [`FLOOR`], nothing reserved.
    pub fn new(gate: &Rc<Gate>) -> Window {
        Window {
            gate: Some(gate.clone()),
            level: Cell::new(None),
            reserved: Cell::new(0),
        }
    }

    /// ztunnel's windows from the start, reserved from nothing (tests of the server alone).
    pub fn unlimited() -> Window {
        Window {
            gate: None,
            level: Cell::new(Some(LEVELS.len() - 1)),
            reserved: Cell::new(0),
        }
    }

    /// The (connection, stream) windows now.
    pub fn current(&self) -> (u32, u32) {
        self.level.get().map_or(FLOOR, |l| LEVELS[l])
    }

    /// Reserves the next level, if any and if the budget has room (and this connection's
    /// share of it).
    pub fn grow(&self) -> Growth {
        let next = self.level.get().map_or(0, |l| l + 1);
        let Some(&(conn, stream)) = LEVELS.get(next) else {
            return Growth::Top;
        };
        let Some(gate) = &self.gate else {
            return Growth::Top;
        };
        if !gate.reserve(self.reserved.get(), above_floor(next)) {
            HboneGauges::count(&gate.metrics.hbone().window_denied);
            return Growth::Denied;
        }
        HboneGauges::count(&gate.metrics.hbone().window_grown);
        self.reserved.set(above_floor(next));
        self.level.set(Some(next));
        Growth::To(conn, stream)
    }

    /// Undoes the last [`grow`](Self::grow) (h2 could not apply it yet).
    pub fn shrink_back(&self) {
        let Some(gate) = &self.gate else { return };
        let level = self.level.get().and_then(|l| l.checked_sub(1));
        let keep = level.map_or(0, above_floor);
        gate.unreserve(self.reserved.get(), keep);
        self.reserved.set(keep);
        self.level.set(level);
    }
}

/// What level `l` reserves: its connection window beyond the floor.
fn above_floor(l: usize) -> u64 {
    u64::from(LEVELS[l].0 - FLOOR.0)
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.unreserve(self.reserved.get(), 0);
        }
    }
}

/// When a connection's receive window may climb: after [`GROW_TURNS`] connection windows, and
/// as many stream windows per open stream, received within [`GROW_WITHIN`]. Pure (the caller gives the clock), so its
/// decisions are tested without waiting.
#[derive(Debug, Clone, Copy)]
pub struct Climb {
    /// Received count and time the current count started at.
    from: u64,
    since: Instant,
    /// Check again once the connection has received this much in all.
    pub at: u64,
}

/// What [`Climb::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not yet: check again at [`Climb::at`].
    Wait,
    /// Proven: try [`Window::grow`], then report it with [`Climb::grown`].
    Grow,
}

impl Climb {
    /// The count of a connection that has `received` bytes so far and `window` as its
    /// (connection, stream) windows.
    pub fn new(received: u64, window: (u32, u32), now: Instant) -> Climb {
        let mut c = Climb {
            from: received,
            since: now,
            at: 0,
        };
        c.restart(received, window, 1, now);
        c
    }

    /// [`GROW_TURNS`] connection windows, and at least as many stream windows per open
    /// stream (each stalled stream may have filled the kernel's buffers behind it).
    fn need(window: (u32, u32), streams: usize) -> u64 {
        let per_stream = u64::from(window.1) * streams.max(1) as u64;
        GROW_TURNS * u64::from(window.0).max(per_stream)
    }

    fn restart(&mut self, received: u64, window: (u32, u32), streams: usize, now: Instant) {
        self.from = received;
        self.since = now;
        self.at = received + Self::need(window, streams);
    }

    /// The connection has received `received` in all (at least [`at`](Self::at)), with
    /// `window` as its (connection, stream) windows and `streams` open.
    pub fn check(
        &mut self,
        received: u64,
        window: (u32, u32),
        streams: usize,
        now: Instant,
    ) -> Step {
        if now.saturating_duration_since(self.since) > GROW_WITHIN {
            // Too slow to need a bigger window (or a burst long ago): count afresh.
            self.restart(received, window, streams, now);
            return Step::Wait;
        }
        let need = Self::need(window, streams);
        if received - self.from < need {
            // More streams opened since the count started: each must carry its share.
            self.at = self.from + need;
            return Step::Wait;
        }
        Step::Grow
    }

    /// After [`Step::Grow`]: what [`Window::grow`] did, and the windows now.
    pub fn grown(&mut self, growth: Growth, received: u64, window: (u32, u32), now: Instant) {
        match growth {
            // Granted: prove the next level. Denied: as much again, by which time the budget
            // may have room (the count restarts, so the connection must still be draining).
            Growth::To(..) | Growth::Denied => self.restart(received, window, 1, now),
            Growth::Top => self.at = u64::MAX,
        }
    }
}

/// What a [`Metered`] connection has received, read by its server loop.
#[derive(Debug)]
pub struct Meter {
    received: Cell<u64>,
    /// Wake the waiter once `received` reaches this.
    wake_at: Cell<u64>,
    waker: RefCell<Option<Waker>>,
    /// The client preface (24 bytes) and its first frame's header (9), as they arrive.
    head: RefCell<[u8; PREFACE_HEAD]>,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            received: Cell::new(0),
            wake_at: Cell::new(u64::MAX),
            waker: RefCell::new(None),
            head: RefCell::new([0; PREFACE_HEAD]),
        }
    }
}

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` and the first frame's header.
const PREFACE_HEAD: usize = 24 + 9;

impl Meter {
    pub fn received(&self) -> u64 {
        self.received.get()
    }

    /// Whether the client preface and the whole first frame (SETTINGS, or h2 refuses the
    /// connection) have arrived.
    pub fn preface_done(&self) -> bool {
        let got = self.received.get();
        if got < PREFACE_HEAD as u64 {
            return false;
        }
        let head = self.head.borrow();
        let len = u32::from_be_bytes([0, head[24], head[25], head[26]]);
        got >= PREFACE_HEAD as u64 + u64::from(len)
    }

    /// Resolves once `received` reaches `at`.
    pub async fn reached(&self, at: u64) {
        std::future::poll_fn(|cx| {
            if self.received.get() >= at {
                return Poll::Ready(());
            }
            self.wake_at.set(at);
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    fn add(&self, bytes: &[u8]) {
        let before = self.received.get();
        if before < PREFACE_HEAD as u64 {
            let start = before as usize;
            let n = bytes.len().min(PREFACE_HEAD - start);
            self.head.borrow_mut()[start..start + n].copy_from_slice(&bytes[..n]);
        }
        let now = before + bytes.len() as u64;
        self.received.set(now);
        if now >= self.wake_at.get()
            && let Some(w) = self.waker.borrow_mut().take()
        {
            w.wake();
        }
    }
}

/// A connection's IO that counts what it reads into a [`Meter`].
#[derive(Debug)]
pub struct Metered<T> {
    io: T,
    meter: Rc<Meter>,
}

impl<T> Metered<T> {
    pub fn new(io: T, meter: Rc<Meter>) -> Metered<T> {
        Metered { io, meter }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.meter.add(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Open streams of one connection, and since when it has had none (the idle timeout's clock).
#[derive(Debug)]
pub struct Activity {
    open: Cell<usize>,
    idle_since: Cell<monoio::time::Instant>,
}

impl Activity {
    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn new() -> Rc<Activity> {
        Rc::new(Activity {
            open: Cell::new(0),
            idle_since: Cell::new(monoio::time::Instant::now()),
        })
    }

    /// Counts a stream open until the returned guard drops.
    pub fn stream(self: &Rc<Self>) -> ActiveStream {
        self.open.set(self.open.get() + 1);
        ActiveStream(self.clone())
    }

    /// Resolves once the connection has had no stream for `timeout`. Sleeps at most once per
    /// `timeout` while streams are open: no wake-up per stream.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            if self.open.get() == 0 {
                let at = self.idle_since.get() + timeout;
                if monoio::time::Instant::now() >= at {
                    return;
                }
                monoio::time::sleep_until(at).await;
            } else {
                monoio::time::sleep(timeout).await;
            }
        }
    }
}

/// See [`Activity::stream`].
#[derive(Debug)]
pub struct ActiveStream(Rc<Activity>);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        let a = &self.0;
        a.open.set(a.open.get() - 1);
        if a.open.get() == 0 {
            a.idle_since.set(monoio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::metrics::Registry;

    fn gate(limits: HboneLimits, cores: usize) -> (Rc<Gate>, Rc<Shard>) {
        let registry = Registry::new();
        let shard = Rc::new(registry.attach_core(0, "test"));
        (Rc::new(Gate::new(limits, cores, shard.clone())), shard)
    }

    fn id(sa: &str) -> Identity {
        Identity::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap()
    }

    #[test]
    fn connections_are_capped_per_peer_and_per_core_share() {
        let limits = HboneLimits {
            max_connections_per_peer: 2,
            max_connections: 7,
            ..HboneLimits::default()
        };
        // Two cores: this one takes ceil(7 / 2) = 4.
        let (gate, shard) = gate(limits, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::PeerLimit);
        let _b1 = gate.admit(b).unwrap();
        let _b2 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(c).unwrap_err(), Refusal::ConnectionLimit);
        drop(a1);
        let _c1 = gate.admit(c).unwrap();
        assert_eq!(shard.hbone().connections.load(Ordering::Relaxed), 4);
        assert_eq!(gate.peers.borrow().get(&a), Some(&1));
    }

    #[test]
    fn streams_are_capped_per_identity() {
        let limits = HboneLimits {
            max_streams_per_identity: 2,
            ..HboneLimits::default()
        };
        let (gate, shard) = gate(limits, 1);
        let (x, y) = (id("x"), id("y"));
        let x1 = gate.stream(&x).unwrap();
        let _x2 = gate.stream(&x).unwrap();
        assert!(gate.stream(&x).is_none());
        let _y1 = gate.stream(&y).unwrap();
        drop(x1);
        assert!(gate.stream(&x).is_some());
        assert_eq!(
            shard
                .hbone()
                .streams_refused_identity
                .load(Ordering::Relaxed),
            1
        );
    }

    /// Reservations never exceed the budget: every connection starts at the floor with
    /// nothing reserved, growth beyond what the budget (or a window's equal share of it) holds
    /// is denied and counted, and everything comes back when connections end.
    #[test]
    fn windows_are_reserved_within_the_budget() {
        let first = above_floor(0);
        // Room for a and b at the second level, and for nothing more.
        let budget = 2 * above_floor(1);
        let limits = HboneLimits {
            receive_budget: budget,
            ..HboneLimits::default()
        };
        let (gate, shard) = gate(limits, 1);
        let a = Window::new(&gate);
        let b = Window::new(&gate);
        let c = Window::new(&gate);
        for w in [&a, &b, &c] {
            assert_eq!(w.current(), FLOOR);
        }
        assert_eq!(gate.budget(), (0, budget));
        assert_eq!(a.grow(), Growth::To(LEVELS[0].0, LEVELS[0].1));
        assert_eq!(b.grow(), Growth::To(LEVELS[0].0, LEVELS[0].1));
        assert_eq!(gate.budget().0, 2 * first);
        assert_eq!(a.grow(), Growth::To(LEVELS[1].0, LEVELS[1].1));
        assert_eq!(gate.budget().0, first + above_floor(1));
        assert_eq!(b.grow(), Growth::To(LEVELS[1].0, LEVELS[1].1));
        assert_eq!(gate.budget(), (budget, budget));
        // Spent: neither a third connection nor a third level.
        assert_eq!(c.grow(), Growth::Denied);
        assert_eq!(a.grow(), Growth::Denied);
        assert_eq!(c.current(), FLOOR);
        assert_eq!(shard.hbone().window_denied.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(gate.budget().0, above_floor(1));
        // Budget freed by one connection is taken by the next that asks.
        assert_eq!(c.grow(), Growth::To(LEVELS[0].0, LEVELS[0].1));
        assert_eq!(gate.budget().0, above_floor(1) + first);
        c.shrink_back();
        assert_eq!(c.current(), FLOOR);
        assert_eq!(gate.budget().0, above_floor(1));
        drop((b, c));
        assert_eq!(gate.budget().0, 0);
        assert_eq!(gate.holders.get(), 0);
        assert_eq!(shard.hbone().reserved_bytes.load(Ordering::Relaxed), 0);
    }

    /// A window never takes more than an equal share of the budget among the windows holding
    /// a reservation, so the first climber cannot take it all.
    #[test]
    fn a_window_takes_at_most_an_equal_share() {
        // Room for one window at the third level, or for two at the second.
        let budget = above_floor(2);
        let limits = HboneLimits {
            receive_budget: budget,
            ..HboneLimits::default()
        };
        let (gate, _) = gate(limits, 1);
        let a = Window::new(&gate);
        let b = Window::new(&gate);
        assert_eq!(a.grow(), Growth::To(LEVELS[0].0, LEVELS[0].1));
        assert_eq!(b.grow(), Growth::To(LEVELS[0].0, LEVELS[0].1));
        assert_eq!(a.grow(), Growth::To(LEVELS[1].0, LEVELS[1].1));
        // Alone, a could take the third level; beside b it may not (half the budget each).
        assert!(above_floor(2) <= budget && above_floor(2) > budget / 2);
        assert_eq!(a.grow(), Growth::Denied);
        drop(b);
        assert_eq!(a.grow(), Growth::To(LEVELS[2].0, LEVELS[2].1));
        assert_eq!(gate.budget(), (budget, budget));
    }

    /// Growth needs [`GROW_TURNS`] windows (and stream windows per open stream) within
    /// [`GROW_WITHIN`]: a burst smaller than that (a stalled stream filling the kernel's
    /// buffers) proves nothing, nor does a trickle however long, nor one stream's bytes when
    /// several share the connection.
    #[test]
    fn a_climb_needs_many_windows_quickly() {
        let t0 = Instant::now();
        let w = FLOOR;
        let turns = GROW_TURNS * u64::from(w.0);
        // A burst of less than the count, then nothing: never due.
        let mut c = Climb::new(0, w, t0);
        assert_eq!(c.at, turns);
        assert!(turns > 2 * STALLED_BURST);
        // A trickle that reaches the count too late: counted afresh, not grown.
        assert_eq!(c.check(turns, w, 1, t0 + 2 * GROW_WITHIN), Step::Wait);
        assert_eq!(c.at, 2 * turns);
        // Quickly enough, but with two streams open: each must carry its share.
        let t1 = t0 + 2 * GROW_WITHIN;
        let half = GROW_WITHIN / 2;
        assert_eq!(c.check(2 * turns, w, 2, t1 + half), Step::Wait);
        assert_eq!(c.at, 3 * turns);
        assert_eq!(c.check(3 * turns, w, 2, t1 + half), Step::Grow);
        // Granted: the next level is proven with its own (bigger) windows.
        let w1 = LEVELS[0];
        c.grown(Growth::To(w1.0, w1.1), 3 * turns, w1, t1 + half);
        let next = GROW_TURNS * u64::from(w1.0);
        assert_eq!(c.at, 3 * turns + next);
        // Up to four streams share the connection window's count; a fifth adds its own.
        assert_eq!(c.check(c.at, w1, 4, t1 + half), Step::Grow);
        assert_eq!(c.check(c.at, w1, 5, t1 + half), Step::Wait);
        assert_eq!(c.at, 3 * turns + 5 * GROW_TURNS * u64::from(w1.1));
        // Denied: tried again after as many windows again.
        assert_eq!(c.check(c.at, w1, 1, t1 + half), Step::Grow);
        let at = c.at;
        c.grown(Growth::Denied, at, w1, t1 + half);
        assert_eq!(c.at, at + next);
        c.grown(Growth::Top, c.at, w1, t1 + half);
        assert_eq!(c.at, u64::MAX);
    }

    /// What a stalled stream pushed into the kernel's buffers on loopback (414 MiB for 500,
    /// `perf/hostile.md`).
    const STALLED_BURST: u64 = 848 << 10;

    #[test]
    fn the_windows_keep_ztunnels_ratio_and_top_out_at_its_sizes() {
        for (conn, stream) in LEVELS {
            assert_eq!(conn, 4 * stream);
        }
        assert_eq!(
            LEVELS[LEVELS.len() - 1],
            (super::super::CONNECTION_WINDOW, super::super::STREAM_WINDOW)
        );
        assert_eq!(Window::unlimited().grow(), Growth::Top);
    }

    #[test]
    fn the_meter_sees_the_preface_and_the_whole_first_frame() {
        let m = Meter::default();
        m.add(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(!m.preface_done());
        // A SETTINGS frame header announcing 6 bytes, then 4 of them.
        m.add(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert!(!m.preface_done());
        m.add(&[5, 6]);
        assert!(m.preface_done());
        assert_eq!(m.received(), 24 + 9 + 6);
    }
}
