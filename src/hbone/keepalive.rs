//! HTTP/2 keepalive for both ends of an HBONE connection: ping the peer every interval and give
//! up on a peer that leaves one ping unanswered too long.
//!
//! Runs on a core, as one future per connection polled beside the connection's own work (the
//! client's driver task, the server's accept loop). That future must live as long as the
//! connection: h2 allows one ping in flight, and a ping dropped before its pong arrived stays in
//! flight for good, so every later ping would fail.

use std::time::Duration;

use h2::{Ping, PingPong};
use tracing::debug;

/// Pings every `interval`; returns when the peer failed to answer one within `timeout` (or the
/// connection is gone). Without `pings` it never returns.
pub async fn run(pings: Option<PingPong>, interval: Duration, timeout: Duration) {
    let Some(mut pings) = pings else {
        // Only one PingPong exists per connection and it is ours; without it, never give up.
        return std::future::pending().await;
    };
    loop {
        monoio::time::sleep(interval).await;
        match monoio::time::timeout(timeout, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!("HBONE ping: {e}");
                return;
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that stops reading (its connection is never polled) is given up on after one
    /// interval and one timeout.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_silent_peer_is_given_up_on() {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = monoio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let io = client.try_into_poll_io().map_err(|(e, _)| e).unwrap();
        let (_send, mut conn): (h2::client::SendRequest<bytes::Bytes>, _) =
            h2::client::handshake(io).await.unwrap();
        let pings = conn.ping_pong();
        monoio::spawn(conn);
        let started = std::time::Instant::now();
        let gave_up = monoio::time::timeout(
            Duration::from_secs(10),
            run(pings, Duration::from_millis(10), Duration::from_millis(50)),
        )
        .await;
        assert!(gave_up.is_ok(), "keepalive kept a silent peer");
        assert!(started.elapsed() >= Duration::from_millis(60));
        drop(server);
    }
}
