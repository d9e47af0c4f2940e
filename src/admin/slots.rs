//! The connections one server of the `zring-admin` thread holds, what each is doing, and which
//! one gives way when a new connection arrives while the server is full. Runs on the
//! `zring-admin` thread only (its locks are never contended; they make the types `Send` for
//! tokio's tasks).
//!
//! Why eviction rather than refusal: 15020 and 15021 listen on every node address, and in node
//! mode the kubelet probes from the node itself, so an attacker can share the kubelet's source
//! address. If a full server refused newcomers, whoever filled it first (slowloris connections
//! that never finish their request head, keep-alive connections left idle) would keep every
//! probe and scrape out. So a connection that has not delivered a complete request head, or
//! sits idle between requests, holds its slot only while nobody else needs it: a newcomer at
//! the cap takes the slot of the one that has waited longest ([`victim`]). A connection that
//! is being answered keeps its slot, unless the client has stopped reading its answer for
//! longer than [`Limits::stall_grace`]. Only when every slot is being answered is the newcomer
//! refused. Each connection also has deadlines of its own ([`View::deadline`]): its request
//! head, its idleness between requests, its lifetime.
//!
//! Phases, as the server sees them: [`Phase::Waiting`] (no byte of the next request yet),
//! [`Phase::Head`] (some bytes, no complete head), [`Phase::Busy`] (the head is complete; the
//! request is being answered until the answer's body has been handed to the socket). A write
//! the socket could not take marks the connection blocked until a write goes through again,
//! whatever its phase: hyper may still be flushing an answer after its body was handed over.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::Server;

/// The bounds of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// From accept (or, on a kept-alive connection, from the first byte of a request) to the
    /// end of the request head.
    pub head_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// The longest any one connection is served, keep-alive included.
    pub lifetime: Duration,
    /// How long a client may leave its answer unread before, when the server is full, its slot
    /// may go to a newcomer.
    pub stall_grace: Duration,
}

/// Connections one server holds at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest any one connection is served (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

impl Limits {
    /// The bounds of `server`. Readiness probes (the kubelet) and scrapes (Prometheus) send
    /// their head at once, so those heads get a short deadline; the admin API's callers are
    /// people and `istioctl`, given longer.
    pub const fn of(server: Server) -> Limits {
        let (head, idle) = match server {
            Server::Readiness => (2, 10),
            Server::Stats => (5, 30),
            Server::Admin => (10, 30),
        };
        Limits {
            max_connections: MAX_CONNECTIONS,
            head_timeout: Duration::from_secs(head),
            idle_timeout: Duration::from_secs(idle),
            lifetime: CONNECTION_LIFETIME,
            stall_grace: Duration::from_secs(2),
        }
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No byte of the next request yet (a new connection, or a kept-alive one between
    /// requests).
    Waiting,
    /// Part of a request head, not all of it.
    Head,
    /// A complete request, being answered.
    Busy,
}

/// Why a connection gave its slot to a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// It had not delivered a complete request head (no request yet, or part of one).
    Incomplete,
    /// Kept alive, waiting for its next request.
    Idle,
    /// Its client had left the answer unread beyond [`Limits::stall_grace`].
    Stalled,
}

impl Reclaim {
    pub const ALL: [Reclaim; 3] = [Reclaim::Incomplete, Reclaim::Idle, Reclaim::Stalled];

    pub fn name(self) -> &'static str {
        match self {
            Reclaim::Incomplete => "incomplete",
            Reclaim::Idle => "idle",
            Reclaim::Stalled => "stalled",
        }
    }
}

/// Which deadline of its own closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Head,
    Idle,
    Lifetime,
}

impl Expiry {
    pub const ALL: [Expiry; 3] = [Expiry::Head, Expiry::Idle, Expiry::Lifetime];

    pub fn name(self) -> &'static str {
        match self {
            Expiry::Head => "head",
            Expiry::Idle => "idle",
            Expiry::Lifetime => "lifetime",
        }
    }
}

/// One connection's state, as the policy reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub accepted: Instant,
    pub phase: Phase,
    /// When the phase began; for the head of a new connection, its accept.
    pub since: Instant,
    /// Requests answered (or being answered) on it so far.
    pub served: u32,
    /// Since when a write has been waiting for the client to read.
    pub blocked: Option<Instant>,
}

impl View {
    pub fn new(now: Instant) -> View {
        View {
            accepted: now,
            phase: Phase::Waiting,
            since: now,
            served: 0,
            blocked: None,
        }
    }

    /// Whether a newcomer may take this connection's slot, and since when it has been
    /// reclaimable (the longest-waiting goes first).
    pub fn reclaimable(&self, now: Instant, stall_grace: Duration) -> Option<(Instant, Reclaim)> {
        if let Some(b) = self.blocked {
            return (now.saturating_duration_since(b) >= stall_grace)
                .then_some((b, Reclaim::Stalled));
        }
        match (self.phase, self.served) {
            (Phase::Busy, _) => None,
            (Phase::Waiting, 0) | (Phase::Head, _) => Some((self.since, Reclaim::Incomplete)),
            (Phase::Waiting, _) => Some((self.since, Reclaim::Idle)),
        }
    }

    /// The connection's next deadline of its own, and which it is.
    pub fn deadline(&self, limits: &Limits) -> (Instant, Expiry) {
        let end = (self.accepted + limits.lifetime, Expiry::Lifetime);
        let phase = match (self.phase, self.served) {
            (Phase::Busy, _) => return end,
            (Phase::Waiting, 0) | (Phase::Head, _) => {
                (self.since + limits.head_timeout, Expiry::Head)
            }
            (Phase::Waiting, _) => (self.since + limits.idle_timeout, Expiry::Idle),
        };
        if phase.0 < end.0 { phase } else { end }
    }
}

/// The connection whose slot a newcomer takes, if any: of the reclaimable ones, the one that
/// has been so the longest (ties: the first).
pub fn victim(
    conns: impl IntoIterator<Item = View>,
    now: Instant,
    stall_grace: Duration,
) -> Option<(usize, Reclaim)> {
    conns
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| v.reclaimable(now, stall_grace).map(|(t, r)| (t, i, r)))
        .min_by_key(|&(t, i, _)| (t, i))
        .map(|(_, i, r)| (i, r))
}

#[derive(Debug)]
struct Inner {
    view: View,
    evicted: Option<Reclaim>,
}

/// One held connection: written by its task (through [`Tracked`] and the service), read by the
/// accept loop when the server is full.
#[derive(Debug)]
pub struct Slot {
    inner: Mutex<Inner>,
    /// Wakes the connection's watch: its phase changed, or it was evicted.
    wake: Notify,
}

impl Slot {
    fn new(now: Instant) -> Slot {
        Slot {
            inner: Mutex::new(Inner {
                view: View::new(now),
                evicted: None,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn view(&self) -> View {
        self.lock().view
    }

    fn set_phase(&self, phase: Phase, since: Instant) {
        let mut i = self.lock();
        i.view.phase = phase;
        i.view.since = since;
        if phase == Phase::Busy {
            i.view.served = i.view.served.saturating_add(1);
        }
        drop(i);
        self.wake.notify_one();
    }

    /// Bytes arrived: a waiting connection has started a request head.
    fn read_some(&self, now: Instant) {
        let v = self.view();
        if v.phase == Phase::Waiting {
            // A new connection's head is timed from its accept; a kept-alive one's from now.
            let since = if v.served == 0 { v.since } else { now };
            self.set_phase(Phase::Head, since);
        }
    }

    /// The request head is complete: the request is being answered.
    pub fn request(&self, now: Instant) {
        self.set_phase(Phase::Busy, now);
    }

    /// The answer's body went to hyper: the connection waits for its next request.
    pub fn responded(&self, now: Instant) {
        if self.view().phase == Phase::Busy {
            self.set_phase(Phase::Waiting, now);
        }
    }

    fn wrote(&self, blocked: bool, now: Instant) {
        let mut i = self.lock();
        match (blocked, i.view.blocked) {
            (true, None) => i.view.blocked = Some(now),
            (false, Some(_)) => i.view.blocked = None,
            _ => {}
        }
    }

    fn evict(&self, why: Reclaim) {
        self.lock().evicted = Some(why);
        self.wake.notify_one();
    }

    /// Resolves when the connection must close: evicted (counted by the accept loop) or past
    /// a deadline of its own.
    pub async fn closed(&self, limits: &Limits) -> Closed {
        loop {
            let (deadline, expiry) = {
                let i = self.lock();
                if let Some(why) = i.evicted {
                    return Closed::Evicted(why);
                }
                i.view.deadline(limits)
            };
            if Instant::now() >= deadline {
                return Closed::Expired(expiry);
            }
            let at = tokio::time::Instant::from_std(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// Why [`Slot::closed`] resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Evicted(Reclaim),
    Expired(Expiry),
}

/// What [`Table::admit`] did with a new connection.
#[derive(Debug)]
pub enum Admit {
    /// A free slot.
    Taken(Held),
    /// The slot of another connection, told to close for it.
    Evicted(Held, Reclaim),
    /// Every slot is being answered: close the newcomer.
    Refused,
}

/// The connections of one server.
#[derive(Debug)]
pub struct Table {
    pub limits: Limits,
    held: Mutex<Vec<Arc<Slot>>>,
}

impl Table {
    pub fn new(limits: Limits) -> Arc<Table> {
        Arc::new(Table {
            limits,
            held: Mutex::new(Vec::with_capacity(limits.max_connections)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Gives a new connection a slot: a free one, else a reclaimable one's ([`victim`]).
    pub fn admit(self: &Arc<Table>, now: Instant) -> Admit {
        let mut held = self.lock();
        let mut evicted = None;
        if held.len() >= self.limits.max_connections {
            let views = held.iter().map(|s| s.view());
            match victim(views, now, self.limits.stall_grace) {
                Some((i, why)) => {
                    held.swap_remove(i).evict(why);
                    evicted = Some(why);
                }
                None => return Admit::Refused,
            }
        }
        let slot = Arc::new(Slot::new(now));
        held.push(slot.clone());
        let h = Held {
            table: self.clone(),
            slot,
        };
        match evicted {
            Some(why) => Admit::Evicted(h, why),
            None => Admit::Taken(h),
        }
    }
}

/// A slot, given back to its table when the connection ends.
#[derive(Debug)]
pub struct Held {
    table: Arc<Table>,
    pub slot: Arc<Slot>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // An evicted connection's slot is already someone else's.
        self.table.lock().retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

/// A connection's socket, reporting to its slot what crosses it: request bytes arriving, and
/// writes the client does not take.
#[derive(Debug)]
pub struct Tracked<S> {
    io: S,
    slot: Arc<Slot>,
}

impl<S> Tracked<S> {
    pub fn new(io: S, slot: Arc<Slot>) -> Tracked<S> {
        Tracked { io, slot }
    }

    fn wrote<T>(&self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.slot.wrote(p.is_pending(), Instant::now());
        p
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let p = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(p, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.read_some(Instant::now());
        }
        p
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_shutdown(cx);
        self.wrote(p)
    }
}

#[cfg(test)]
mod tests;
