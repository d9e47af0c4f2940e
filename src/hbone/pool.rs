//! The per-core pool of HBONE client connections.
//!
//! Runs on one core; `RefCell` inside, never shared, so checkout takes no lock. Connections are
//! keyed by what makes one reusable for another ([`PoolKey`]): the source identity (the
//! certificate we present), the identities the peer may present, the peer's address and the
//! source IP the socket is bound to. A key holds any number of connections; a connection carries
//! at most `max_streams` CONNECT streams at once, and when all are full the next checkout dials
//! another.
//!
//! At most one dial is in flight per key: checkouts that find no free connection while a dial is
//! running wait for its outcome instead of dialing too (no thundering herd after a restart or
//! on the first burst), then look again. A failed dial fails its waiters with the same error
//! rather than letting each of them retry.
//!
//! Cost: every core keeps its own connections, so a busy node holds up to
//! `cores × destinations` connections (plus more where 100 streams are not enough); in exchange
//! a stream never crosses cores. A connection idle for `idle_timeout` is released by
//! [`Pool::reap`], which the core calls periodically.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::ClientConfig;
use tracing::info;

use super::HboneError;
use super::client::{Dial, H2Client};
use crate::identity::Identity;
use crate::latch::Latch;
use crate::metrics::{LatencyKind, Shard};

/// What makes a pooled connection reusable for a new stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub source: Identity,
    /// Identities the peer may present; the connection was verified against exactly this set.
    pub expected: Box<[Identity]>,
    pub dst: SocketAddr,
    pub source_ip: Option<IpAddr>,
    /// In-pod mode: the enrolled pod (uid) whose netns the connection's socket lives in. A
    /// pod's connections are never lent to another pod, even one that inherited its IP, and
    /// [`Pool::close_pod`] finds them when the pod goes.
    pub pod: Option<Arc<str>>,
}

#[derive(Debug)]
pub struct Pool {
    entries: RefCell<HashMap<PoolKey, Entry>>,
    max_streams: u32,
    idle_timeout: Duration,
    /// The core's metrics, for the handshake time of every connection dialed.
    metrics: Rc<Shard>,
}

#[derive(Debug, Default)]
struct Entry {
    conns: Vec<Rc<H2Client>>,
    /// The dial in flight for this key, if any.
    dialing: Option<Rc<Dialing>>,
}

/// The outcome of one dial, awaited by the checkouts that found it running: fired once, by the
/// dialing task when it has a connection or an error, or by its [`DialGuard`] when it is dropped
/// mid-dial.
type Dialing = Latch<Result<(), Arc<str>>>;

/// A stream slot on a pooled connection, held for the life of one proxied connection.
#[derive(Debug)]
pub struct Lease(Rc<H2Client>);

impl std::ops::Deref for Lease {
    type Target = H2Client;
    fn deref(&self) -> &H2Client {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Clears a key's dial when the dialing task finishes or is dropped mid-dial, so waiters never
/// hang on a dial nobody runs.
struct DialGuard<'a> {
    pool: &'a Pool,
    key: &'a PoolKey,
    dialing: Rc<Dialing>,
}

impl Drop for DialGuard<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.pool.entries.borrow_mut().get_mut(self.key)
            && entry
                .dialing
                .as_ref()
                .is_some_and(|d| Rc::ptr_eq(d, &self.dialing))
        {
            entry.dialing = None;
        }
        self.dialing.fire(Err("dial abandoned".into()));
    }
}

enum Step {
    Wait(Rc<Dialing>),
    Dial(Rc<Dialing>),
}

impl Pool {
    pub fn new(max_streams: u32, idle_timeout: Duration, metrics: Rc<Shard>) -> Pool {
        Pool {
            entries: RefCell::default(),
            max_streams: max_streams.max(1),
            idle_timeout,
            metrics,
        }
    }

    /// A stream slot on a connection for `key`: an open connection with room, else the outcome
    /// of the dial in flight, else a new dial (TCP from `connect`, then TLS with `config` and
    /// HTTP/2, all within `dial.timeout`).
    pub async fn checkout<F, Fut>(
        &self,
        key: &PoolKey,
        dial: Dial,
        config: &Arc<ClientConfig>,
        connect: F,
    ) -> Result<Lease, HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TcpStream, crate::net::Error>>,
    {
        let mut connect = Some(connect);
        loop {
            let step = {
                let mut entries = self.entries.borrow_mut();
                let entry = match entries.get_mut(key) {
                    Some(e) => e,
                    None => entries.entry(key.clone()).or_default(),
                };
                entry.conns.retain(|c| c.is_open());
                if let Some(c) = entry.conns.iter().find(|c| c.active() < self.max_streams) {
                    c.acquire();
                    return Ok(Lease(c.clone()));
                }
                match &entry.dialing {
                    Some(d) => Step::Wait(d.clone()),
                    None => {
                        let d = Rc::new(Dialing::default());
                        entry.dialing = Some(d.clone());
                        Step::Dial(d)
                    }
                }
            };
            match step {
                Step::Wait(d) => {
                    if let Err(e) = d.wait().await {
                        return Err(HboneError::Pooled(key.dst, e));
                    }
                }
                Step::Dial(dialing) => {
                    let guard = DialGuard {
                        pool: self,
                        key,
                        dialing,
                    };
                    let started = Instant::now();
                    // A key dials at most once per checkout: a dial's outcome ends the loop.
                    let tcp = connect.take().map(|c| c());
                    let Some(tcp) = tcp else {
                        return Err(HboneError::Pooled(key.dst, "dial already tried".into()));
                    };
                    let client = match H2Client::connect_over(tcp, dial, config.clone()).await {
                        Ok(c) => {
                            self.metrics
                                .observe(LatencyKind::HandshakeClient, started.elapsed());
                            Rc::new(c)
                        }
                        Err(e) => {
                            guard.dialing.fire(Err(e.to_string().into()));
                            return Err(e);
                        }
                    };
                    client.acquire();
                    let total = {
                        let mut entries = self.entries.borrow_mut();
                        let entry = entries.entry(key.clone()).or_default();
                        entry.conns.push(client.clone());
                        entry.conns.len()
                    };
                    info!(
                        peer = %key.dst,
                        source = %key.source,
                        connections = total,
                        "new HBONE connection to {}", key.dst
                    );
                    guard.dialing.fire(Ok(()));
                    return Ok(Lease(client));
                }
            }
        }
    }

    /// Releases closed connections and those idle for longer than the idle timeout; forgets
    /// keys left with nothing. Returns how many connections were released.
    pub fn reap(&self, now: Instant) -> usize {
        let mut released = 0;
        self.entries.borrow_mut().retain(|_, entry| {
            let before = entry.conns.len();
            entry
                .conns
                .retain(|c| c.is_open() && c.idle_for(now) < self.idle_timeout);
            released += before - entry.conns.len();
            !entry.conns.is_empty() || entry.dialing.is_some()
        });
        released
    }

    /// Forgets every connection made for the enrolled pod `uid` (removed): no new stream goes
    /// on them, and each closes once its open streams end (its last handle drops). Returns how
    /// many were open.
    pub fn close_pod(&self, uid: &str) -> usize {
        let mut closed = 0;
        self.entries.borrow_mut().retain(|key, entry| {
            if key.pod.as_deref() != Some(uid) {
                return true;
            }
            closed += entry.conns.iter().filter(|c| c.is_open()).count();
            false
        });
        closed
    }

    /// Open connections across all keys.
    pub fn connections(&self) -> usize {
        self.entries
            .borrow()
            .values()
            .map(|e| e.conns.iter().filter(|c| c.is_open()).count())
            .sum()
    }

    /// How often the core should call [`Pool::reap`].
    pub fn reap_interval(&self) -> Duration {
        (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}
