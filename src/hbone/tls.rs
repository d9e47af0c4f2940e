//! TLS for HBONE on a core: handshakes over a core's sockets, and the core's cache of rustls
//! configurations.
//!
//! Runs on the cores. tokio-rustls and h2 drive the socket through tokio's poll-style IO traits,
//! as `hbone::socket` gives it for the core's driver (epoll: monoio's poll-IO bridge; io_uring:
//! readiness waits on the ring, bytes by non-blocking system calls). rustls reads that socket
//! through `ReadAhead` (large reads served in rustls's 4 KiB asks), the handshake included: the
//! bytes a client sends right behind its handshake are often read with it, and must stay with
//! the connection.
//!
//! Configs are built from the published `CertStore` (see `identity::tls`) the first time a core
//! needs them and reused until the store's generation changes: building one costs a few
//! microseconds and allocations we do not want per connection. The cache belongs to one core
//! (`RefCell`), so there is no lock; each core builds its own copies, at most one per local
//! identity (server) and per (source identity, expected peers) pair (client).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::batch::Batched;
use super::readahead::ReadAhead;
use super::socket::Socket;
use crate::identity::{self, CertStore, Identity};
use crate::net::Driver;

/// A TLS client connection as h2 drives it (writes batched until h2 flushes: `hbone::batch`).
pub type ClientIo = Batched<tokio_rustls::client::TlsStream<ReadAhead<Socket>>>;
/// A TLS server connection as h2 drives it.
pub type ServerIo = Batched<tokio_rustls::server::TlsStream<ReadAhead<Socket>>>;

/// More cached client configs than this means destinations churn; start over rather than grow.
const MAX_CLIENT_CONFIGS: usize = 4096;

/// A client config is specific to the certificate presented and the identities accepted.
type ClientKey = (Identity, Box<[Identity]>);

/// One core's rustls configs, valid for one `CertStore` generation.
#[derive(Debug, Default)]
pub struct TlsCache {
    generation: Cell<u64>,
    server: RefCell<HashMap<Identity, Arc<ServerConfig>>>,
    client: RefCell<HashMap<ClientKey, Arc<ClientConfig>>>,
}

impl TlsCache {
    /// The server config presenting `local`'s certificate.
    pub fn server(
        &self,
        store: &CertStore,
        local: &Identity,
    ) -> Result<Arc<ServerConfig>, identity::Error> {
        self.follow(store);
        if let Some(c) = self.server.borrow().get(local) {
            return Ok(c.clone());
        }
        let config = identity::server_config(store, local)?;
        self.server
            .borrow_mut()
            .insert(local.clone(), config.clone());
        Ok(config)
    }

    /// The client config presenting `source`'s certificate and accepting one of `expected`.
    pub fn client(
        &self,
        store: &CertStore,
        source: &Identity,
        expected: &[Identity],
    ) -> Result<Arc<ClientConfig>, identity::Error> {
        self.follow(store);
        // The lookup key borrows nothing: a tuple of owned values is what the map holds, and
        // cloning identities is a reference-count increment each.
        let key = (source.clone(), Box::<[Identity]>::from(expected));
        if let Some(c) = self.client.borrow().get(&key) {
            return Ok(c.clone());
        }
        let config = identity::client_config(store, source, expected)?;
        let mut map = self.client.borrow_mut();
        if map.len() >= MAX_CLIENT_CONFIGS {
            map.clear();
        }
        map.insert(key, config.clone());
        Ok(config)
    }

    /// Drops every cached config built from an older store.
    fn follow(&self, store: &CertStore) {
        if self.generation.get() != store.generation() {
            self.generation.set(store.generation());
            self.server.borrow_mut().clear();
            self.client.borrow_mut().clear();
        }
    }
}

/// Hands a connected socket to the poll-style IO that tokio-rustls and h2 need, for the
/// driver running this thread.
fn poll_io(tcp: TcpStream, driver: Driver) -> io::Result<ReadAhead<Socket>> {
    Socket::new(tcp, driver).map(ReadAhead::new)
}

/// Runs the client handshake on a connected socket. The peer is verified by `config`'s
/// verifier (chain + expected identities) during the handshake. `driver` is the one running
/// this thread.
pub async fn client_handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    driver: Driver,
) -> io::Result<ClientIo> {
    let io = poll_io(tcp, driver)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(identity::placeholder_server_name(), io)
        .await
        .map(Batched::new)
        .map_err(explain)
}

/// Runs the server handshake on an accepted socket and returns the client's identity (its
/// certificate was verified against the roots and our trust domain during the handshake).
/// `driver` is the one running this thread.
pub async fn server_handshake(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    driver: Driver,
) -> Result<(ServerIo, Identity), HandshakeError> {
    let io = poll_io(tcp, driver).map_err(HandshakeError::Io)?;
    let tls = match tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .into_fallible()
        .await
    {
        Ok(tls) => tls,
        Err((e, io)) => {
            linger(io.into_inner()).await;
            return Err(HandshakeError::Io(explain(e)));
        }
    };
    let peer = identity::peer_identity(tls.get_ref().1).map_err(HandshakeError::Identity)?;
    Ok((Batched::new(tls), peer))
}

/// How long a refused handshake's socket keeps reading, and how much, before it closes.
const LINGER: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 64 * 1024;

/// Closes a refused handshake's socket so that the client can read our alert. A TLS 1.3 client
/// sends its certificate and, in the same breath, its first application data; closing with
/// those bytes unread makes the kernel answer with a reset, which can reach the client before
/// it reads the alert, and then all it reports is a broken pipe, not why we refused it. So:
/// the alert is out (rustls sent it), send FIN, read and drop what the client still sends
/// until it closes too, for [`LINGER`] and [`LINGER_BYTES`] at most (cold path: the buffer
/// is allocated here).
async fn linger(mut io: Socket) {
    let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
    let mut buf = vec![0u8; 4096];
    let drain = async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            let mut read = ReadBuf::new(&mut buf);
            match poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut read)).await {
                Ok(()) if !read.filled().is_empty() => dropped += read.filled().len(),
                _ => return,
            }
        }
    };
    let _ = monoio::time::timeout(LINGER, drain).await;
}

/// rustls reports our verifiers' refusals as `InvalidCertificate(Other(..))`, whose Display is
/// a Debug dump; say what the verifier said instead (cold path: a failed handshake).
fn explain(e: io::Error) -> io::Error {
    let reason = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                Some(format!("invalid peer certificate: {}", other.0))
            }
            _ => None,
        });
    match reason {
        Some(reason) => io::Error::new(e.kind(), reason),
        None => e,
    }
}

/// Why [`server_handshake`] refused a client.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Identity(identity::Error),
}
