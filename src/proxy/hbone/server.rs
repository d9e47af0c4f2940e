//! The HTTP/2 server side of an HBONE connection: settings, the accept loop, keepalive, and the
//! CONNECT request checks that need no workload state.
//!
//! Runs on a core, in the task that accepted the TCP connection. The accept loop also drives the
//! connection (h2 makes progress only while `accept` is polled), so it runs until the peer
//! goes away; each accepted stream becomes its own task.
//!
//! Abuse limits (h2 enforces them): at most [`SERVER_MAX_STREAMS`] concurrent streams,
//! [`MAX_HEADER_LIST_SIZE`] of headers (counted across CONTINUATION frames), and bounded counts
//! of streams reset before accept or reset by us in error (rapid-reset floods end the
//! connection with GOAWAY).

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Ping, RecvStream};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::headers::{self, HeaderError};
use super::{
    CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, MAX_LOCAL_ERROR_RESETS,
    MAX_PENDING_RESETS, MAX_SEND_BUFFER, PING_INTERVAL, PING_TIMEOUT, SERVER_MAX_STREAMS,
    STREAM_WINDOW,
};

/// Serves HTTP/2 on `io` until the connection ends, calling `on_stream` for every request.
/// `on_stream` should spawn: the loop does not wait for streams to finish. When `drain`
/// resolves, the server sends GOAWAY (no new streams) and keeps serving the open ones until
/// the client closes.
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
    let mut conn = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(SERVER_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(io)
        .await?;
    let mut pings = conn.ping_pong();
    let mut next_ping = monoio::time::Instant::now() + PING_INTERVAL;
    let mut drain = std::pin::pin!(drain);
    let mut draining = false;
    loop {
        let accept = conn.accept();
        let ping = keepalive_tick(pings.as_mut(), next_ping);
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
            req = accept => match req {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok((request, respond))) => on_stream(request, respond),
            },
            alive = ping => {
                if !alive {
                    debug!(%peer, "HBONE client stopped answering pings");
                    return Ok(());
                }
                next_ping = monoio::time::Instant::now() + PING_INTERVAL;
            },
        }
    }
}

/// Waits until `at`, pings, and waits for the pong; `false` when the peer did not answer in
/// time. Dropped (and started over) whenever a request arrives first, which is fine: any
/// request proves the peer alive, and the deadline carries over between calls.
async fn keepalive_tick(pings: Option<&mut h2::PingPong>, at: monoio::time::Instant) -> bool {
    let Some(pings) = pings else {
        return std::future::pending().await;
    };
    monoio::time::sleep_until(at).await;
    matches!(
        monoio::time::timeout(PING_TIMEOUT, pings.ping(Ping::opaque())).await,
        Ok(Ok(_))
    )
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
pub fn accept(mut respond: SendResponse<Bytes>) -> Result<h2::SendStream<Bytes>, h2::Error> {
    let response = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .expect("a status-only response is always valid");
    respond.send_response(response, false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
