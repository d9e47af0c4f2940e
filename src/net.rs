//! Moving bytes between sockets: the upstream connect (with its timeout), the RST that refuses
//! a client, the per-core copy buffers and the byte pump between two TCP sockets.
//!
//! Runs on the cores. The leaf of the data path: it knows sockets, buffers, byte counters and
//! which monoio driver a core runs ([`Driver`]), nothing of cores, listeners or HBONE (it
//! imports neither `core`, `proxy` nor `hbone`), so both the listeners (`proxy`) and the HBONE
//! client (`hbone`) build on it. Modules:
//! - `buffers`: the per-core pools of copy buffers, two sizes;
//! - `copy`: the bidirectional byte pump between two TCP sockets.

pub mod buffers;
pub mod copy;
pub mod own;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::sys::socket::{self, SpoofSide, UpstreamOpts};

pub use buffers::BufferPool;

/// The monoio driver a core runs, resolved once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Legacy,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "io_uring",
            Driver::Legacy => "epoll",
        }
    }
}

/// Who a socket, a byte count or a failure belongs to: the one enum for "side" on the data path
/// (the byte pumps attribute their errors with it, the listeners report every error's side).
///
/// The names are a proxy's: bytes flow from the downstream (the client that opened the
/// connection) to the upstream (the server it reaches), and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's end: the pod that opened the connection, or the peer zring on 15008.
    Downstream,
    /// The server's end: the destination pod, or the peer zring's 15008 zring tunnels to.
    Upstream,
    /// zring itself (its configuration, certificates or policy decisions), neither end.
    Internal,
}

/// Why an upstream connect failed. The `Display` texts are those of the access log's `error`
/// field, which `proxy::Error` passes through unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {dst}: {source}")]
    Connect { dst: SocketAddr, source: io::Error },
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
}

/// Opens a marked upstream connection, optionally from the client's IP (IP_TRANSPARENT), with
/// a timeout. monoio cannot bind before connecting, so the socket is built by `sys::socket`
/// and completed here by waiting for writability.
///
/// Boxed: a connection's task is as large as its largest phase for its whole life, and the
/// connect's timer would otherwise make every idle connection carry it (see `proxy::outbound`).
pub fn connect(
    dst: SocketAddr,
    spoof_source: Option<IpAddr>,
    side: SpoofSide,
    mark: u32,
    timeout: Duration,
) -> Pin<Box<impl Future<Output = Result<TcpStream, Error>>>> {
    Box::pin(async move {
        let err = |source| Error::Connect { dst, source };
        let opts = UpstreamOpts {
            spoof_source,
            mark,
            side,
        };
        let std = socket::start_connect(dst, opts).map_err(err)?;
        let stream = TcpStream::from_std(std).map_err(err)?;
        match monoio::time::timeout(timeout, stream.writable(false)).await {
            Err(_) => return Err(Error::ConnectTimeout(dst)),
            Ok(r) => r.map_err(err)?,
        }
        socket::take_socket_error(stream.as_raw_fd()).map_err(err)?;
        Ok(stream)
    })
}

/// Refuses a plaintext connection with a TCP RST rather than a FIN, so the client sees a
/// failure instead of an empty response.
pub fn reset(stream: TcpStream) {
    // Best effort: if SO_LINGER cannot be set the connection still closes, with a FIN.
    let _ = socket::set_reset_on_close(&stream);
    drop(stream);
}
