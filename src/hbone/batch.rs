//! The IO adapter h2 drives on an HBONE connection: tokio-rustls for the handshake and reads,
//! but writes batched until h2 flushes.
//!
//! Runs on a core, inside the connection's h2 task. tokio-rustls encrypts each write h2 hands
//! it and sends the records at once: one `writev` per HTTP/2 frame (h2 writes every DATA frame
//! of 256 bytes or more on its own), so 64 streams answering 1 KiB each cost 64 system calls.
//! Here a write only encrypts into rustls's queue of outgoing records; the records go out when
//! h2 flushes (it does whenever it has nothing more to write) or when the queue reaches
//! [`SEND_QUEUE`], in one `writev` of up to 64 records. Same bytes, same records, fewer and
//! larger kernel crossings, and larger writes give TCP larger segments to offload.

use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustls::ConnectionCommon;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Encrypted bytes rustls may hold before a write must wait for the socket (rustls's own
/// default is 64 KiB): a flush carries up to this much in one `writev`.
pub const SEND_QUEUE: usize = 256 * 1024;

/// A TLS stream whose records leave on flush, not on every write.
#[derive(Debug)]
pub struct Batched<T> {
    inner: T,
}

/// The parts of a tokio-rustls stream the batching needs: the socket and the connection state.
pub trait TlsParts {
    type Io: AsyncWrite + Unpin;
    type Data;
    fn parts(&mut self) -> (&mut Self::Io, &mut ConnectionCommon<Self::Data>);
}

impl<IO: AsyncWrite + AsyncRead + Unpin> TlsParts for tokio_rustls::client::TlsStream<IO> {
    type Io = IO;
    type Data = rustls::client::ClientConnectionData;
    fn parts(&mut self) -> (&mut IO, &mut ConnectionCommon<Self::Data>) {
        let (io, conn) = self.get_mut();
        (io, conn)
    }
}

impl<IO: AsyncWrite + AsyncRead + Unpin> TlsParts for tokio_rustls::server::TlsStream<IO> {
    type Io = IO;
    type Data = rustls::server::ServerConnectionData;
    fn parts(&mut self) -> (&mut IO, &mut ConnectionCommon<Self::Data>) {
        let (io, conn) = self.get_mut();
        (io, conn)
    }
}

impl<T: TlsParts> Batched<T> {
    /// Wraps an established stream and lets rustls queue up to [`SEND_QUEUE`].
    pub fn new(mut inner: T) -> Batched<T> {
        inner.parts().1.set_buffer_limit(Some(SEND_QUEUE));
        Batched { inner }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// Sends rustls's queued records until none is left (`Ready(Ok)`) or the socket is full.
fn send_queued<IO: AsyncWrite + Unpin, D>(
    io: &mut IO,
    conn: &mut ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while conn.wants_write() {
        match conn.write_tls(&mut SyncWriter { io: &mut *io, cx }) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

impl<T: TlsParts + AsyncRead + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: TlsParts + AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            let (io, conn) = self.inner.parts();
            let n = conn.writer().write_vectored(bufs)?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            // The queue is full: send it, then encrypt more.
            ready!(send_queued(io, conn, cx))?;
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, conn) = self.inner.parts();
        ready!(send_queued(io, conn, cx))?;
        Pin::new(io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, conn) = self.inner.parts();
        ready!(send_queued(io, conn, cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// rustls writes through `std::io::Write`; this turns the socket's `Pending` into `WouldBlock`
/// (the waker is registered by then).
struct SyncWriter<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncWrite + Unpin> Write for SyncWriter<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
