//! Read-ahead under rustls: one large read from the socket, served to rustls in its small asks.
//!
//! Runs on a core, as the socket of an HBONE connection's TLS stream (`hbone::tls` wraps every
//! socket in it before the handshake). rustls reads ciphertext in asks of 4 KiB (its deframer's
//! read size; somewhat more once its buffer has grown mid-record), so a 16 KiB record costs two
//! to four `recvfrom` system calls on the socket (`hbone::socket`). Here, when rustls asks and
//! nothing is buffered, one non-blocking read of up to [`READ_AHEAD`] bytes fills a buffer of
//! the connection, and rustls's asks are served from it until it is drained; only then does the
//! next ask reach the socket.
//!
//! Invariants:
//! - The buffer exists only while it holds bytes: it is allocated for a read and dropped when
//!   that read brings nothing (would block, end of stream, error) or when rustls has taken the
//!   last byte, so an idle connection holds no read buffer.
//! - It never grows: the socket is read only when the buffer is empty, into a fresh buffer of
//!   exactly [`READ_AHEAD`] bytes, so a peer that floods gets at most that much ahead of rustls.
//!   Back-pressure is unchanged: rustls stops asking once its plaintext is not consumed, and
//!   then nothing more is read from the socket.
//! - Order is kept: end of stream and errors come from the socket, which is read only once the
//!   buffered bytes are gone, so rustls sees them after every byte that preceded them.
//!
//! Writes pass straight through (`hbone::batch` already sends them in large `writev`s).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest read from the socket: about four full TLS records (16 KiB of plaintext each).
/// Measured against 16, 32 and 128 KiB in perf/notes-hbone.md §5.
pub const READ_AHEAD: usize = 64 * 1024;

/// A socket whose reads are taken ahead in [`READ_AHEAD`]-byte bites.
#[derive(Debug)]
pub struct ReadAhead<IO> {
    io: IO,
    /// Bytes read from the socket and not yet handed to the reader. Empty and unallocated
    /// between bursts: a fresh buffer is taken for each read of the socket.
    buf: BytesMut,
}

impl<IO> ReadAhead<IO> {
    pub fn new(io: IO) -> ReadAhead<IO> {
        ReadAhead {
            io,
            buf: BytesMut::new(),
        }
    }

    /// The socket, giving up whatever was read ahead (for closing a refused connection).
    pub fn into_inner(self) -> IO {
        self.io
    }

    /// Bytes read from the socket that the reader has not taken yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a read buffer is allocated (only while it holds bytes).
    pub fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Moves up to `out.remaining()` buffered bytes to `out`; drops the buffer once drained.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.buf.len());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() && out.remaining() > 0 {
            // A fresh buffer per read: the read fills it from the start and can never make it
            // grow (it reads at most the spare capacity, which is exactly `READ_AHEAD`).
            let mut buf = BytesMut::with_capacity(READ_AHEAD);
            // Whatever the read brings besides bytes (would block, end of stream, an error),
            // the buffer goes with `buf` here and the connection holds none.
            ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut buf
            ))?;
            this.buf = buf;
        }
        this.serve(out);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
