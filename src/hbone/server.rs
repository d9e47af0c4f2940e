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

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::headers::{self, HeaderError};
use super::{PING_INTERVAL, PING_TIMEOUT, keepalive, settings};

/// Serves HTTP/2 on `io` until the connection ends, calling `on_stream` for every request.
/// `on_stream` should spawn: the loop does not wait for streams to finish. When `drain`
/// resolves, the server sends GOAWAY (no new streams) and keeps serving the open ones until
/// the client closes.
pub async fn serve<T, F>(
    io: T,
    peer: SocketAddr,
    drain: impl Future<Output = ()>,
    on_stream: F,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RecvStream>, SendResponse<Bytes>),
{
    serve_with(io, peer, drain, PING_INTERVAL, PING_TIMEOUT, on_stream).await
}

/// [`serve`] with the keepalive's interval and timeout as parameters (tests shorten them).
pub(crate) async fn serve_with<T, F>(
    io: T,
    peer: SocketAddr,
    drain: impl Future<Output = ()>,
    ping_interval: Duration,
    ping_timeout: Duration,
    mut on_stream: F,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RecvStream>, SendResponse<Bytes>),
{
    let mut conn = settings::server().handshake::<_, Bytes>(io).await?;
    // One keepalive future for the connection's whole life, polled beside `accept`. It must
    // not be dropped and restarted when a request arrives: h2 allows one ping in flight, and a
    // ping whose pong is never awaited stays in flight for good, so every later ping would
    // fail and a busy connection would be declared dead one interval later.
    let keepalive = keepalive::run(conn.ping_pong(), ping_interval, ping_timeout);
    let mut keepalive = std::pin::pin!(keepalive);
    let mut drain = std::pin::pin!(drain);
    let mut draining = false;
    loop {
        let drained = async {
            if draining {
                std::future::pending::<()>().await;
            }
            (&mut drain).await
        };
        monoio::select! {
            () = drained => {
                debug!(%peer, "draining: GOAWAY");
                draining = true;
                conn.graceful_shutdown();
            },
            req = conn.accept() => match req {
                None => return Ok(()),
                Some(Err(e)) => {
                    if e.is_go_away() && e.is_library() {
                        // h2 caught the peer breaking the protocol or its abuse limits
                        // (CONTINUATION or reset floods…) and sent GOAWAY: say so where an
                        // operator looks, the stream tasks never hear of it.
                        warn!(%peer, "HBONE connection refused: {e}");
                    }
                    return Err(e);
                }
                Some(Ok((request, respond))) => on_stream(request, respond),
            },
            () = &mut keepalive => {
                debug!(%peer, "HBONE client stopped answering pings");
                return Ok(());
            },
        }
    }
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
                serve_with(
                    io,
                    peer,
                    std::future::pending(),
                    INTERVAL,
                    Duration::from_secs(5),
                    |_, respond| refuse(respond, StatusCode::BAD_REQUEST),
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
            // The client hung up; the server ends cleanly.
            assert!(server.await.is_ok());
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
