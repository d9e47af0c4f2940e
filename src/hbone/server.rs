//! The HTTP/2 server side of an HBONE connection: the accept loop (with the `settings` and the
//! `keepalive` both ends share), and the CONNECT request checks that need no workload state.
//!
//! Runs on a core, in the task that accepted the TCP connection. The accept loop also drives the
//! connection (h2 makes progress only while `accept` is polled), so it runs until the peer
//! goes away; each accepted stream becomes its own task.
//!
//! Abuse limits (h2 enforces them, `settings::server` sets them): at most
//! [`SERVER_MAX_STREAMS`](super::SERVER_MAX_STREAMS) concurrent streams,
//! [`MAX_HEADER_LIST_SIZE`](super::MAX_HEADER_LIST_SIZE) of headers (counted across
//! CONTINUATION frames), and bounded counts of streams reset before accept or reset by us in
//! error (rapid-reset floods end the connection with GOAWAY).

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::{Connection, SendResponse};
use h2::{Reason, RecvStream};
use http::{Method, Request, Response, StatusCode};
use monoio::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::{debug, warn};

use super::headers::{self, HeaderError};
use super::limits::{ActiveStream, Activity, Climb, Growth, Meter, Metered, Step, Window};
use super::{PING_INTERVAL, PING_TIMEOUT, keepalive, settings};

/// How long a connection we are closing (idle, preface timeout) gets to read our GOAWAY and
/// close its end before we drop it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The deadlines of one server connection.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// From the end of the TLS handshake to the client's preface and first SETTINGS.
    pub preface_timeout: Duration,
    /// A connection without streams for this long is closed.
    pub idle_timeout: Duration,
}

impl Options {
    /// The keepalive of [`PING_INTERVAL`] and [`PING_TIMEOUT`], with these deadlines.
    pub fn new(preface_timeout: Duration, idle_timeout: Duration) -> Options {
        Options {
            ping_interval: PING_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            preface_timeout,
            idle_timeout,
        }
    }
}

/// How a server connection ended without an HTTP/2 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it (after a drain's GOAWAY too).
    Closed,
    /// The client stopped answering pings.
    Silent,
    /// No preface and first SETTINGS within the deadline: closed (TLS close_notify before the
    /// preface, GOAWAY SETTINGS_TIMEOUT after it).
    PrefaceTimeout,
    /// No stream for the idle timeout: GOAWAY NO_ERROR, then closed.
    Idle,
}

/// Serves HTTP/2 on `io` until the connection ends, calling `on_stream` for every request.
/// `on_stream` should spawn: the loop does not wait for streams to finish. When `drain`
/// resolves, the server sends GOAWAY (no new streams) and keeps serving the open ones until
/// the client closes. ztunnel's windows and the default deadlines, no budget: for servers that
/// are not 15008 (tests, benches, fuzzing); 15008 runs [`serve_with`].
pub async fn serve<T, F>(
    io: T,
    peer: SocketAddr,
    drain: impl Future<Output = ()>,
    mut on_stream: F,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RecvStream>, SendResponse<Bytes>),
{
    let d = crate::config::HboneLimits::default();
    let opts = Options::new(d.preface_timeout, d.idle_timeout);
    let window = Window::unlimited();
    serve_with(io, peer, drain, opts, &window, |request, respond, _| {
        on_stream(request, respond)
    })
    .await
    .map(drop)
}

/// Serves HTTP/2 on `io` until the connection ends, calling `on_stream` for every request with
/// a guard that keeps the connection from counting as idle while the stream lives.
/// `on_stream` should spawn: the loop does not wait for streams to finish. When `drain`
/// resolves, the server sends GOAWAY (no new streams) and keeps serving the open ones until
/// the client closes. `window` gives the receive windows and grows them as the connection
/// proves its destinations drain (see `limits`).
pub async fn serve_with<T, F>(
    io: T,
    peer: SocketAddr,
    drain: impl Future<Output = ()>,
    opts: Options,
    window: &Window,
    mut on_stream: F,
) -> Result<Ended, h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RecvStream>, SendResponse<Bytes>, ActiveStream),
{
    let meter = Rc::new(Meter::default());
    // Shared, so that a connection whose handshake we abandon can still be closed properly.
    let io = Shared(Rc::new(RefCell::new(Metered::new(io, meter.clone()))));
    let deadline = Instant::now() + opts.preface_timeout;
    let (conn_window, stream_window) = window.current();
    let handshake = settings::server(conn_window, stream_window).handshake::<_, Bytes>(io.clone());
    let handshake = monoio::time::timeout_at(deadline, handshake).await;
    let mut conn = match handshake {
        Ok(conn) => conn?,
        Err(_) => {
            debug!(%peer, "no HTTP/2 preface in time: closing");
            // close_notify and FIN, so the client sees an orderly end, not a reset.
            let mut io = io;
            let _ = monoio::time::timeout(CLOSE_GRACE, io.shutdown()).await;
            return Ok(Ended::PrefaceTimeout);
        }
    };
    // One keepalive future for the connection's whole life, polled beside `accept`. It must
    // not be dropped and restarted when a request arrives: h2 allows one ping in flight, and a
    // ping whose pong is never awaited stays in flight for good, so every later ping would
    // fail and a busy connection would be declared dead one interval later.
    let keepalive = keepalive::run(conn.ping_pong(), opts.ping_interval, opts.ping_timeout);
    let mut keepalive = std::pin::pin!(keepalive);
    let activity = Activity::new();
    // Created once too: a timer re-armed per request would cost a wake-up per stream.
    let idle = activity.idle_for(opts.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut drain = std::pin::pin!(drain);
    let mut draining = false;
    // The connection grows its windows once it has proven that its destinations drain
    // (`limits::Climb`).
    let mut climb = Climb::new(meter.received(), window.current(), Instant::now());
    loop {
        let drained = async {
            if draining {
                std::future::pending::<()>().await;
            }
            (&mut drain).await
        };
        let preface_late = async {
            if meter.preface_done() {
                return std::future::pending().await;
            }
            monoio::time::sleep_until(deadline).await;
            // The sleep returns at the deadline; the preface may have arrived meanwhile.
            if meter.preface_done() {
                std::future::pending::<()>().await;
            }
        };
        monoio::select! {
            () = drained => {
                debug!(%peer, "draining: GOAWAY");
                draining = true;
                conn.graceful_shutdown();
            },
            req = conn.accept() => match req {
                None => return Ok(Ended::Closed),
                Some(Err(e)) => {
                    if e.is_go_away() && e.is_library() {
                        // h2 caught the peer breaking the protocol or its abuse limits
                        // (CONTINUATION or reset floods…) and sent GOAWAY: say so where an
                        // operator looks, the stream tasks never hear of it.
                        warn!(%peer, "HBONE connection refused: {e}");
                    }
                    return Err(e);
                }
                Some(Ok((request, respond))) => on_stream(request, respond, activity.stream()),
            },
            () = &mut keepalive => {
                debug!(%peer, "HBONE client stopped answering pings");
                return Ok(Ended::Silent);
            },
            () = preface_late => {
                debug!(%peer, "no SETTINGS after the HTTP/2 preface in time: GOAWAY");
                conn.abrupt_shutdown(Reason::SETTINGS_TIMEOUT);
                close(&mut conn).await;
                return Ok(Ended::PrefaceTimeout);
            },
            () = &mut idle => {
                debug!(%peer, "HBONE connection idle: GOAWAY");
                conn.graceful_shutdown();
                close(&mut conn).await;
                return Ok(Ended::Idle);
            },
            () = meter.reached(climb.at) => {
                let (received, now) = (meter.received(), Instant::now());
                let streams = activity.open();
                if climb.check(received, window.current(), streams, now) == Step::Grow {
                    let growth = grow(&mut conn, window);
                    climb.grown(growth, received, window.current(), now);
                }
            },
        }
    }
}

/// One connection's IO, shared between h2 and the loop that may have to close it.
#[derive(Debug)]
struct Shared<T>(Rc<RefCell<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Shared<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Shared<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.borrow().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}

/// Lets a connection we are closing send its GOAWAY and hear the client go, for
/// [`CLOSE_GRACE`] at most; streams arriving meanwhile are refused.
async fn close<T: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<T, Bytes>) {
    let _ = monoio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok((_, mut respond))) = conn.accept().await {
            respond.send_reset(Reason::REFUSED_STREAM);
        }
    })
    .await;
}

/// Moves the connection one window level up if the budget allows.
fn grow<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T, Bytes>,
    window: &Window,
) -> Growth {
    let growth = window.grow();
    if let Growth::To(conn_window, stream_window) = growth {
        if conn.set_initial_window_size(stream_window).is_err() {
            // Our previous SETTINGS is not acknowledged yet: try again after the next count
            // (as if denied).
            window.shrink_back();
            return Growth::Denied;
        }
        conn.set_target_window_size(conn_window);
    }
    growth
}

/// The CONNECT target of a request, or why the request is refused (answered 400).
pub fn connect_target<B>(request: &Request<B>) -> Result<SocketAddr, HeaderError> {
    if request.method() != Method::CONNECT {
        return Err(HeaderError::Method);
    }
    let authority = request
        .uri()
        .authority()
        .ok_or(HeaderError::Authority)?
        .as_str();
    headers::parse_authority(authority.as_bytes())
}

/// Runs `work` (connecting to the target, say) unless the client resets the stream first:
/// then `work` is dropped and the reset is the error. A stream reset by the peer no longer
/// counts against [`SERVER_MAX_STREAMS`](super::SERVER_MAX_STREAMS), so without this a client could open and reset
/// streams in a loop (the "rapid reset" attack) and leave one pending upstream connect per
/// stream, without bound.
pub async fn unless_reset<F: Future>(
    respond: &mut SendResponse<Bytes>,
    work: F,
) -> Result<F::Output, h2::Error> {
    let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
    monoio::select! {
        out = work => Ok(out),
        reset = reset => Err(reset.map_or_else(|e| e, h2::Error::from)),
    }
}

/// Answers a request with `status` and no body, ending the stream.
pub fn refuse(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let response = Response::builder()
        .status(status)
        .body(())
        .expect("a status-only response is always valid");
    // The client may already be gone; nothing more to do then.
    let _ = respond.send_response(response, true);
}

/// Answers 200 and returns the stream to send the tunnel's bytes on.
pub fn respond_ok(mut respond: SendResponse<Bytes>) -> Result<h2::SendStream<Bytes>, h2::Error> {
    let response = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .expect("a status-only response is always valid");
    respond.send_response(response, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that opens streams back to back for many ping intervals keeps its connection.
    /// Regression: the keepalive was restarted whenever a request arrived, which abandoned an
    /// in-flight ping; h2 then refused every later ping and the server hung up on the busy
    /// client one interval later.
    #[test]
    fn a_busy_connection_outlives_its_keepalive_interval() {
        const INTERVAL: Duration = Duration::from_millis(20);
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = monoio::spawn(async move {
                let (tcp, peer) = listener.accept().await.unwrap();
                let io = tcp.try_into_poll_io().map_err(|(e, _)| e).unwrap();
                let opts = Options {
                    ping_interval: INTERVAL,
                    ping_timeout: Duration::from_secs(5),
                    preface_timeout: Duration::from_secs(5),
                    idle_timeout: Duration::from_secs(60),
                };
                let window = Window::unlimited();
                serve_with(
                    io,
                    peer,
                    std::future::pending(),
                    opts,
                    &window,
                    |_, respond, _| refuse(respond, StatusCode::BAD_REQUEST),
                )
                .await
            });
            let tcp = monoio::net::TcpStream::connect(addr).await.unwrap();
            let (send, conn) =
                h2::client::handshake(tcp.try_into_poll_io().map_err(|(e, _)| e).unwrap())
                    .await
                    .unwrap();
            monoio::spawn(conn);
            let end = std::time::Instant::now() + 25 * INTERVAL;
            let mut requests = 0;
            while std::time::Instant::now() < end {
                let mut send =
                    send.clone().ready().await.unwrap_or_else(|e| {
                        panic!("connection closed after {requests} requests: {e}")
                    });
                let (response, _) = send.send_request(req(Method::GET, "/"), true).unwrap();
                let response = response
                    .await
                    .unwrap_or_else(|e| panic!("connection closed after {requests} requests: {e}"));
                assert_eq!(response.status(), StatusCode::BAD_REQUEST);
                requests += 1;
            }
            drop(send);
            // The client hung up. The server ends cleanly, or sees the reset Linux sends in place
            // of a FIN when the client closes with a ping of the server's still unread (the
            // server pings every 20 ms, so under load that race is real): as a read error, or as
            // ENOTCONN from the shutdown h2 makes once the peer is gone. Anything else is a bug;
            // the inbound proxy only logs these endings (`proxy::inbound`).
            match server.await {
                Ok(_) => {}
                Err(e) => {
                    let kind = e.get_io().map(std::io::Error::kind);
                    assert!(
                        matches!(
                            kind,
                            Some(
                                std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::BrokenPipe
                                    | std::io::ErrorKind::NotConnected
                            )
                        ),
                        "server ended with {e:?}"
                    );
                }
            }
        });
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    fn opts(preface: Duration, idle: Duration) -> Options {
        Options {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
            preface_timeout: preface,
            idle_timeout: idle,
        }
    }

    /// Serves one plain-TCP connection with `opts`, refusing every request with 400.
    fn serve_one(
        listener: monoio::net::TcpListener,
        opts: Options,
    ) -> monoio::task::JoinHandle<Result<Ended, h2::Error>> {
        monoio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let io = tcp.try_into_poll_io().map_err(|(e, _)| e).unwrap();
            let window = Window::unlimited();
            serve_with(
                io,
                peer,
                std::future::pending(),
                opts,
                &window,
                |_, respond, _| refuse(respond, StatusCode::BAD_REQUEST),
            )
            .await
        })
    }

    /// Reads until EOF; returns the error codes of the GOAWAY frames seen.
    async fn goaways(tcp: monoio::net::TcpStream) -> Vec<u32> {
        use monoio::io::AsyncReadRent;
        let mut tcp = tcp;
        let mut all = Vec::new();
        loop {
            let (r, buf) = tcp.read(vec![0u8; 4096]).await;
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        let mut codes = Vec::new();
        let mut at = 0;
        while at + 9 <= all.len() {
            let len = u32::from_be_bytes([0, all[at], all[at + 1], all[at + 2]]) as usize;
            if all[at + 3] == 0x7 && at + 9 + len <= all.len() {
                let p = &all[at + 9..];
                codes.push(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
        codes
    }

    /// A client that sends nothing is closed at the preface deadline; one that sends the
    /// preface but no SETTINGS gets GOAWAY SETTINGS_TIMEOUT.
    #[test]
    fn a_client_without_preface_or_settings_is_closed_at_the_deadline() {
        runtime().block_on(async {
            use monoio::io::AsyncWriteRentExt;
            let short = opts(Duration::from_millis(50), Duration::from_secs(60));
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = serve_one(listener, short);
            let tcp = monoio::net::TcpStream::connect(addr).await.unwrap();
            assert_eq!(server.await.unwrap(), Ended::PrefaceTimeout);
            // Our SETTINGS came first, then the orderly close: no GOAWAY before a preface.
            assert_eq!(goaways(tcp).await, Vec::<u32>::new());

            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = serve_one(listener, short);
            let mut tcp = monoio::net::TcpStream::connect(addr).await.unwrap();
            let (r, _) = tcp
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec())
                .await;
            r.unwrap();
            assert_eq!(server.await.unwrap(), Ended::PrefaceTimeout);
            assert_eq!(
                goaways(tcp).await,
                vec![u32::from(Reason::SETTINGS_TIMEOUT)]
            );
        });
    }

    /// A connection whose streams have all ended is closed with GOAWAY NO_ERROR once it has
    /// been without one for the idle timeout, though it answers pings all along.
    #[test]
    fn a_connection_without_streams_is_closed_when_idle() {
        runtime().block_on(async {
            let idle = opts(Duration::from_secs(5), Duration::from_millis(100));
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = serve_one(listener, idle);
            let tcp = monoio::net::TcpStream::connect(addr).await.unwrap();
            let (send, conn) =
                h2::client::handshake(tcp.try_into_poll_io().map_err(|(e, _)| e).unwrap())
                    .await
                    .unwrap();
            let client = monoio::spawn(conn);
            let mut send = send.ready().await.unwrap();
            let (response, _) = send.send_request(req(Method::GET, "/"), true).unwrap();
            assert_eq!(response.await.unwrap().status(), StatusCode::BAD_REQUEST);
            assert_eq!(server.await.unwrap(), Ended::Idle);
            // The client's connection ends: it heard the GOAWAY and the close.
            let _ = client.await;
            assert!(send.ready().await.is_err());
        });
    }

    fn req(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn only_a_connect_to_ip_port_has_a_target() {
        assert_eq!(
            connect_target(&req(Method::CONNECT, "10.244.2.4:80")),
            Ok("10.244.2.4:80".parse().unwrap())
        );
        assert_eq!(
            connect_target(&req(Method::GET, "http://10.244.2.4:80/")),
            Err(HeaderError::Method)
        );
        assert_eq!(
            connect_target(&req(Method::POST, "10.244.2.4:80")),
            Err(HeaderError::Method)
        );
        assert_eq!(
            connect_target(&req(Method::CONNECT, "appb.default.svc:80")),
            Err(HeaderError::Authority)
        );
        assert_eq!(
            connect_target(&req(Method::CONNECT, "10.244.2.4:0")),
            Err(HeaderError::AuthorityPort)
        );
        assert_eq!(
            connect_target(&req(Method::CONNECT, "/just/a/path")),
            Err(HeaderError::Authority)
        );
    }
}
