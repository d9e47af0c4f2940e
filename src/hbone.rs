//! HBONE: TCP tunnelled as HTTP/2 `CONNECT` streams over mutual TLS between SPIFFE identities.
//!
//! Runs on the cores; the listeners (`proxy`) use it, it builds on `net` (connect, buffers) and
//! never imports `core` or `proxy`. Modules:
//! - `headers`: the CONNECT request's `:authority`, `baggage`, `forwarded`, `traceparent` (pure);
//! - `tls`: TLS handshakes on a core's sockets and the per-core cache of rustls configs;
//! - `batch`: the IO adapter h2 drives: TLS records leave on flush, batched, not per frame;
//! - `readahead`: the socket under rustls: large reads served in rustls's small asks;
//! - `client`: one pooled HTTP/2 client connection (handshake, keepalive, streams);
//! - `pool`: the per-core pool of client connections;
//! - `server`: the HTTP/2 server side of a 15008 connection;
//! - `limits`: what a core's 15008 lets clients hold (connections, streams, receive windows);
//! - `pump`: the byte pump between a TCP socket and one HTTP/2 stream;
//! - `socket`: the socket under TLS, as tokio's traits over the core's driver.
//!
//! HTTP/2 runs on the `h2` crate over tokio's IO traits: `socket` gives a connected socket
//! those traits for the core's driver, TLS wraps it (tokio-rustls), and the h2 connection
//! future is driven by a monoio task of the same core. Nothing here is `Send`; nothing takes a
//! lock.
//!
//! The settings are ztunnel's, so zring and ztunnel tunnel to each other with the same flow
//! control: 4 MiB stream window, 16 MiB connection window, 1 MiB frames.

pub mod batch;
pub mod client;
pub mod headers;
pub mod keepalive;
pub mod limits;
pub mod pool;
pub mod pump;
pub mod readahead;
pub mod server;
pub mod settings;
pub mod socket;
pub mod tls;

use std::time::Duration;

/// HTTP/2 per-stream receive window.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// HTTP/2 connection receive window.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame we accept.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// Concurrent streams a server accepts per connection (clients open at most
/// `POOL_MAX_STREAMS_PER_CONNECTION`, 100 by default, so a client never waits on this).
pub const SERVER_MAX_STREAMS: u32 = 200;
/// A CONNECT request's headers are a few hundred bytes; 16 KiB leaves room for long baggage
/// and refuses header floods (h2 enforces it across CONTINUATION frames too).
pub const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;
/// Bytes h2 may buffer for sending per stream beyond what flow control lets out; our pump waits
/// for capacity, so this only bounds a misbehaving caller.
pub const MAX_SEND_BUFFER: usize = 1 << 20;
/// Streams a peer may reset before we have accepted them, and streams we may reset in error,
/// before the connection is considered abusive (the "rapid reset" attack).
pub const MAX_PENDING_RESETS: usize = 20;
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// How often an HTTP/2 connection pings its peer, and how long without an answer kills it.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything that can end an HBONE connection or stream before its bytes flow. Each variant
/// says which step failed; `proxy::Error::report` gives each its answer, `response_flags` and
/// side.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    /// The TCP connect to the peer's 15008 failed or timed out (the text names the address).
    #[error(transparent)]
    Connect(crate::net::Error),
    /// The TCP connection is up; the TLS handshake failed (alerts, a peer identity we do not
    /// accept, a reset mid-handshake).
    #[error("TLS handshake with {peer}: {source}")]
    Tls {
        peer: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// TLS is up; the HTTP/2 handshake (preface and SETTINGS) failed. The only `From<h2::Error>`:
    /// `?` in the handshake lands here, errors on streams are named explicitly.
    #[error("HTTP/2 handshake: {0}")]
    Http2Handshake(#[from] h2::Error),
    /// A step did not finish within the connect timeout.
    #[error("{phase} {peer} timed out")]
    Timeout {
        peer: std::net::SocketAddr,
        phase: Phase,
    },
    #[error("no certificate for {0} yet")]
    NoCertificate(crate::identity::Identity),
    #[error("TLS configuration: {0}")]
    Config(#[from] crate::identity::Error),
    /// The CONNECT stream to the peer failed after the peer took the request.
    #[error("HTTP/2: {0}")]
    H2(h2::Error),
    #[error("HTTP/2 connection unusable before the request was taken: {0}")]
    Retryable(h2::Error),
    /// Another task's dial, which this one waited for, failed (its text).
    #[error("pooled connection to {0} failed: {1}")]
    Pooled(std::net::SocketAddr, std::sync::Arc<str>),
    #[error("CONNECT refused with status {0}")]
    Status(http::StatusCode),
    /// Server side: the request is not a CONNECT this server serves (answered 400).
    #[error("bad CONNECT request: {0}")]
    BadRequest(&'static str),
    /// Server side: the client's stream failed (reset while zring connected to the pod, or gone
    /// before the answer could be sent).
    #[error("HTTP/2: {0}")]
    Downstream(h2::Error),
}

/// The step of an HBONE client connection that a timeout cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    TcpConnect,
    Tls,
    Http2Handshake,
    ConnectRequest,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::TcpConnect => "TCP connect to",
            Phase::Tls => "TLS handshake with",
            Phase::Http2Handshake => "HTTP/2 handshake with",
            Phase::ConnectRequest => "CONNECT request to",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use monoio::net::TcpListener;
    use rustls::ClientConfig;

    use super::HboneError;
    use super::Phase;
    use super::client::{Dial, H2Client};

    /// A client config good enough to start a handshake (nothing here gets past TLS).
    fn client_config() -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(crate::crypto::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    fn dial(via: std::net::SocketAddr) -> Dial {
        Dial {
            via,
            source_ip: None,
            mark: 0,
            timeout: Duration::from_millis(300),
            // monoio's poll-IO bridge: it runs under either driver, as these tests do.
            driver: crate::net::Driver::Legacy,
        }
    }

    /// A refused TCP connect is reported as the connect it is, not as a TLS failure.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_refused_connect_names_the_tcp_connect() {
        let via = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = H2Client::connect(dial(via), client_config())
            .await
            .unwrap_err();
        assert!(matches!(e, HboneError::Connect(_)), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!("connect to {via}: ")),
            "{e}"
        );
    }

    /// A peer that accepts TCP and then says nothing times out in the TLS handshake, and the
    /// error says which step it was.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_silent_peer_times_out_in_the_tls_handshake() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let via = l.local_addr().unwrap();
        let client = H2Client::connect(dial(via), client_config());
        // The accepted socket stays open (held in `_accepted`) until the client gave up.
        let (r, _accepted) = monoio::join!(client, l.accept());
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                HboneError::Timeout {
                    phase: Phase::Tls,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), format!("TLS handshake with {via} timed out"));
    }
}
