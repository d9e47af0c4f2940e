//! HBONE: TCP tunnelled as HTTP/2 `CONNECT` streams over mutual TLS between SPIFFE identities.
//!
//! Runs on the cores; the listeners (`proxy`) use it, it builds on `net` (connect, buffers) and
//! never imports `core` or `proxy`. Modules:
//! - `headers`: the CONNECT request's `:authority`, `baggage`, `forwarded`, `traceparent` (pure);
//! - `tls`: TLS handshakes on a core's sockets and the per-core cache of rustls configs;
//! - `client`: one pooled HTTP/2 client connection (handshake, keepalive, streams);
//! - `pool`: the per-core pool of client connections;
//! - `server`: the HTTP/2 server side of a 15008 connection;
//! - `pump`: the byte pump between a TCP socket and one HTTP/2 stream.
//!
//! HTTP/2 runs on the `h2` crate over tokio's IO traits: a socket leaves monoio's completion
//! mode (`into_poll_io`), TLS wraps it (tokio-rustls), and the h2 connection future is driven by
//! a monoio task of the same core. Nothing here is `Send`; nothing takes a lock.
//!
//! The settings are ztunnel's, so zring and ztunnel tunnel to each other with the same flow
//! control: 4 MiB stream window, 16 MiB connection window, 1 MiB frames.

pub mod client;
pub mod headers;
pub mod keepalive;
pub mod pool;
pub mod pump;
pub mod server;
pub mod settings;
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

/// Everything that can end an HBONE connection or stream before its bytes flow.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("TLS handshake with {peer}: {source}")]
    Tls {
        peer: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("no certificate for {0} yet")]
    NoCertificate(crate::identity::Identity),
    #[error("TLS configuration: {0}")]
    Config(#[from] crate::identity::Error),
    #[error("peer identity: {0}")]
    PeerIdentity(crate::identity::Error),
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("HTTP/2 connection unusable before the request was taken: {0}")]
    Retryable(h2::Error),
    #[error("HBONE handshake with {0} timed out")]
    HandshakeTimeout(std::net::SocketAddr),
    #[error("pooled connection to {0} failed: {1}")]
    Pooled(std::net::SocketAddr, std::sync::Arc<str>),
    #[error("CONNECT refused with status {0}")]
    Status(http::StatusCode),
    #[error("bad CONNECT request: {0}")]
    BadRequest(&'static str),
}

impl HboneError {
    /// The `response_flags` value for a connection that ended with this error.
    pub fn response_flag(&self) -> &'static str {
        match self {
            HboneError::Status(s) if *s == http::StatusCode::UNAUTHORIZED => "DENY",
            HboneError::Status(_) => "CONNECT",
            HboneError::Tls { .. }
            | HboneError::NoCertificate(_)
            | HboneError::Config(_)
            | HboneError::PeerIdentity(_)
            | HboneError::H2(_)
            | HboneError::Retryable(_)
            | HboneError::HandshakeTimeout(_)
            | HboneError::Pooled(..) => "CONNECT",
            HboneError::BadRequest(_) => "DENY",
        }
    }
}
