//! One HBONE client connection: mTLS + HTTP/2 to a peer's 15008, shared by up to
//! `POOL_MAX_STREAMS_PER_CONNECTION` CONNECT streams (see `hbone::pool`).
//!
//! Runs on a core. [`H2Client::connect`] does the TCP connect (from the source pod's IP, marked),
//! the TLS handshake (the peer is verified against the expected identities inside it) and the
//! HTTP/2 handshake, then spawns the connection's driver task on the same core: it polls the h2
//! connection future and pings the peer every [`PING_INTERVAL`]; a peer silent for
//! [`PING_TIMEOUT`] is dead and the connection is dropped. When the driver ends, for whatever
//! reason, it marks the client closed so the pool stops handing it out.

use std::cell::Cell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Request, StatusCode};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Phase;
use crate::net::Driver;
use crate::sys::socket::SpoofSide;
use tracing::debug;

use super::{HboneError, PING_INTERVAL, PING_TIMEOUT, keepalive, settings, tls};

/// How to reach the peer.
#[derive(Debug, Clone, Copy)]
pub struct Dial {
    /// The peer's HBONE address, `<pod ip>:15008`.
    pub via: SocketAddr,
    /// The source pod's IP, bound with IP_TRANSPARENT so the peer sees the real client.
    pub source_ip: Option<IpAddr>,
    pub mark: u32,
    /// Bounds TCP connect, TLS and HTTP/2 handshakes together.
    pub timeout: Duration,
    /// The monoio driver running the dialing thread (how the TLS socket is driven).
    pub driver: Driver,
}

/// An established HTTP/2 client connection.
#[derive(Debug)]
pub struct H2Client {
    send: SendRequest<Bytes>,
    pub peer: SocketAddr,
    /// Streams open on this connection right now; the pool keeps it under its limit.
    active: Cell<u32>,
    /// When the last stream ended (or the connection was made), for idle release.
    idle_since: Cell<Instant>,
    /// Set by the driver task when the connection is gone.
    closed: Rc<Cell<bool>>,
}

impl H2Client {
    /// Connects, handshakes, and starts the connection's driver task on this core.
    pub async fn connect(dial: Dial, config: Arc<ClientConfig>) -> Result<H2Client, HboneError> {
        let tcp = crate::net::connect(
            dial.via,
            dial.source_ip,
            SpoofSide::Outbound,
            dial.mark,
            dial.timeout,
        );
        H2Client::connect_over(tcp, dial, config).await
    }

    /// [`connect`](Self::connect) over a TCP connection `tcp` makes (in-pod mode: a socket
    /// from the source pod's netns); `dial.timeout` bounds it with the handshakes.
    pub async fn connect_over(
        tcp: impl Future<Output = Result<monoio::net::TcpStream, crate::net::Error>>,
        dial: Dial,
        config: Arc<ClientConfig>,
    ) -> Result<H2Client, HboneError> {
        // One deadline for the three steps; `phase` tells which one it cut short.
        let phase = Cell::new(Phase::TcpConnect);
        let fut = async {
            let tcp = tcp.await.map_err(HboneError::Connect)?;
            phase.set(Phase::Tls);
            let io = tls::client_handshake(tcp, config, dial.driver)
                .await
                .map_err(|source| HboneError::Tls {
                    peer: dial.via,
                    source,
                })?;
            phase.set(Phase::Http2Handshake);
            H2Client::handshake(io, dial.via).await
        };
        monoio::time::timeout(dial.timeout, fut)
            .await
            .map_err(|_| HboneError::Timeout {
                peer: dial.via,
                phase: phase.get(),
            })?
    }

    /// Runs the HTTP/2 handshake on an established (TLS) stream to `peer` and spawns the
    /// connection's driver task on this core. `connect` uses it after TLS; benches use it to
    /// compare TLS adapters.
    pub async fn handshake<T>(io: T, peer: SocketAddr) -> Result<H2Client, HboneError>
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (send, mut conn) = settings::client().handshake::<_, Bytes>(io).await?;
        let closed = Rc::new(Cell::new(false));
        let pings = conn.ping_pong();
        let done = closed.clone();
        crate::task::spawn("hbone_client", async move {
            let keepalive = keepalive::run(pings, PING_INTERVAL, PING_TIMEOUT);
            let mut conn = std::pin::pin!(conn);
            let mut keepalive = std::pin::pin!(keepalive);
            monoio::select! {
                r = &mut conn => if let Err(e) = r {
                    debug!(%peer, "HBONE connection ended: {e}");
                },
                () = &mut keepalive => debug!(%peer, "HBONE peer stopped answering pings"),
            }
            done.set(true);
        });
        Ok(H2Client {
            send,
            peer,
            active: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            closed,
        })
    }

    /// Whether the connection can still carry new streams.
    pub fn is_open(&self) -> bool {
        !self.closed.get()
    }

    pub fn active(&self) -> u32 {
        self.active.get()
    }

    /// How long the connection has carried no stream; zero while it carries one.
    pub fn idle_for(&self, now: Instant) -> Duration {
        if self.active.get() > 0 {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.idle_since.get())
        }
    }

    /// Counts a stream as open until [`H2Client::release`].
    pub(crate) fn acquire(&self) {
        self.active.set(self.active.get() + 1);
    }

    pub(crate) fn release(&self) {
        let n = self.active.get().saturating_sub(1);
        self.active.set(n);
        if n == 0 {
            self.idle_since.set(Instant::now());
        }
    }

    /// Sends a CONNECT request and waits for the answer: on 200 the stream is open both ways.
    pub async fn open(
        &self,
        request: Request<()>,
        timeout: Duration,
    ) -> Result<(SendStream<Bytes>, RecvStream), HboneError> {
        // Errors before the peer took the stream (the connection is gone or going away, or
        // the stream was refused) mean the request was never processed: the connection is
        // retired and the caller may retry on another.
        let unused = |e: h2::Error| {
            self.closed.set(true);
            HboneError::Retryable(e)
        };
        let fut = async {
            let mut send = self.send.clone().ready().await.map_err(unused)?;
            let (response, stream) = send.send_request(request, false).map_err(unused)?;
            let response = response.await.map_err(|e| {
                if e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                    unused(e)
                } else {
                    HboneError::H2(e)
                }
            })?;
            if response.status() != StatusCode::OK {
                return Err(HboneError::Status(response.status()));
            }
            Ok((stream, response.into_body()))
        };
        monoio::time::timeout(timeout, fut)
            .await
            .map_err(|_| HboneError::Timeout {
                peer: self.peer,
                phase: Phase::ConnectRequest,
            })?
    }
}
