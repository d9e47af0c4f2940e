//! An HBONE connection's socket as rustls and h2 see it: tokio's poll-style IO traits over
//! monoio's completion-mode operations on owned buffers.
//!
//! Runs on a core, under the TLS stream of every HBONE connection (`hbone::tls` wraps each
//! socket in it before the handshake). The socket never leaves monoio's completion mode: under
//! io_uring its reads and writes are ring operations (no `POLL_ADD` on an epoll descriptor, no
//! `epoll_wait`, no read that ends in `EAGAIN`); under the legacy driver the same code runs on
//! epoll. A poll-style caller cannot lend a buffer to an operation that outlives the call, so
//! each operation owns its buffer and its half of the socket (`Splitable::into_split`) inside
//! a boxed future that hands both back when it completes; dropping the socket mid-operation
//! drops that future, and monoio cancels the operation and keeps the buffer until the kernel
//! lets go of it.
//!
//! Reads: when the reader (rustls, in 4 KiB asks) finds nothing buffered, one read of up to
//! [`READ_AHEAD`] bytes fills a fresh buffer, and the asks are served from it until it is
//! drained; only then does the next ask start another read.
//! - An idle connection holds no read buffer: unless the last read filled its buffer (bulk
//!   data, more is surely waiting), a read first waits for readability, which holds no buffer,
//!   and takes its buffer only once bytes are there. A drained buffer is dropped at once.
//! - Order is kept: end of stream and errors come from a read, which starts only once the
//!   buffered bytes are gone, so the reader sees them after every byte that preceded them.
//! - A flooding peer gets at most one buffer ahead of the reader, which reads only as fast as
//!   its plaintext is consumed.
//!
//! Writes: a write copies what it is given into an owned buffer and starts one operation that
//! writes all of it; until that completes, further writes and flushes are `Pending` (so h2
//! waits while a write is in flight), and a flush completes once nothing is in flight. A
//! write's error is reported by the next write, flush or shutdown. `hbone::batch` gathers
//! every record rustls queued into one such write ([`RingSocket::poll_send`]). The buffer a
//! write hands back is kept for the next write until a flush finds nothing left to send, so
//! bulk transfers reuse one buffer and an idle connection holds none.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::sys::splice::read_half;

/// The largest read from the socket: about four full TLS records (16 KiB of plaintext each).
/// Measured against 16, 32 and 128 KiB in perf/notes-hbone.md §5.
pub const READ_AHEAD: usize = 64 * 1024;

/// The first capacity of a write's buffer: a full TLS record and its framing fit, larger
/// batches grow it.
const WRITE_START: usize = 17 * 1024;

/// What an operation hands back: the half it ran on, its outcome, and its buffer.
type Done<H, T> = (H, io::Result<T>, Vec<u8>);

/// One direction of the socket: its half, or the operation that holds it.
enum Half<H, T> {
    Idle(H),
    Busy(Pin<Box<dyn Future<Output = Done<H, T>>>>),
    /// Only between taking the half out and putting it back, within one call.
    Moving,
}

impl<H, T> Half<H, T> {
    /// Starts `op` on the half if it is idle (callers wait for that first); else leaves the
    /// operation in flight as it is.
    fn start<F>(&mut self, op: impl FnOnce(H) -> F)
    where
        F: Future<Output = Done<H, T>> + 'static,
    {
        *self = match std::mem::replace(self, Half::Moving) {
            Half::Idle(half) => Half::Busy(Box::pin(op(half))),
            other => other,
        };
    }

    /// Polls the operation in flight, if any: `Ready(None)` when there is none.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<(io::Result<T>, Vec<u8>)>> {
        match self {
            Half::Idle(_) => Poll::Ready(None),
            Half::Busy(op) => {
                let (half, result, buf) = ready!(op.as_mut().poll(cx));
                *self = Half::Idle(half);
                Poll::Ready(Some((result, buf)))
            }
            Half::Moving => Poll::Ready(Some((Err(moving()), Vec::new()))),
        }
    }
}

/// The error for a half found mid-move, which the methods below never leave behind.
fn moving() -> io::Error {
    io::Error::other("socket half in an unfinished move")
}

/// A connected socket in completion mode behind tokio's `AsyncRead` and `AsyncWrite`.
pub struct RingSocket {
    reader: Half<OwnedReadHalf<TcpStream>, usize>,
    writer: Half<OwnedWriteHalf<TcpStream>, ()>,
    /// Bytes read and not yet handed to the reader, from `pos` on. Unallocated between reads.
    buf: Vec<u8>,
    pos: usize,
    /// The last read filled its buffer: the next one starts without waiting for readability.
    streaming: bool,
    /// A finished write's buffer, for the next write (dropped when a flush finds nothing to do).
    spare: Vec<u8>,
    /// The error of a write that was already reported as accepted.
    failed: Option<io::Error>,
}

impl std::fmt::Debug for RingSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSocket")
            .field("buffered", &self.buffered())
            .field("reading", &matches!(self.reader, Half::Busy(_)))
            .field("writing", &self.writing())
            .finish()
    }
}

impl RingSocket {
    pub fn new(tcp: TcpStream) -> RingSocket {
        let (r, w) = tcp.into_split();
        RingSocket {
            reader: Half::Idle(r),
            writer: Half::Idle(w),
            buf: Vec::new(),
            pos: 0,
            streaming: false,
            spare: Vec::new(),
            failed: None,
        }
    }

    /// Bytes read from the socket that the reader has not taken yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether a read or spare write buffer is allocated (the read one only while it holds
    /// bytes, the write one only between writes of a burst).
    pub fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0 || self.spare.capacity() > 0
    }

    /// Whether a write is in flight.
    pub fn writing(&self) -> bool {
        matches!(self.writer, Half::Busy(_))
    }

    /// Moves up to `out.remaining()` buffered bytes to `out`; drops the buffer once drained.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.buffered());
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Starts a read: straight away after a full one, else once the socket is readable.
    fn start_read(&mut self) {
        let wait = !self.streaming;
        self.reader.start(move |mut half| async move {
            // Readiness is asked for strictly (`relaxed = false`): under epoll a relaxed wait
            // could answer from monoio's stale readiness state and the read would then wait,
            // buffer in hand; under io_uring it is a `POLL_ADD` either way.
            if wait && let Err(e) = read_half(&half).readable(false).await {
                return (half, Err(e), Vec::new());
            }
            let (result, buf) = half.read(Vec::with_capacity(READ_AHEAD)).await;
            (half, result, buf)
        });
    }

    /// Waits until no write is in flight; reports the error of the last one, if it failed.
    fn poll_write_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((result, buf)) = ready!(self.writer.poll_done(cx)) {
            self.spare = buf;
            if let Err(e) = result {
                self.failed = Some(e);
            }
        }
        match self.failed.take() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Once no write is in flight, starts one of what `fill` puts into an (empty) buffer; an
    /// empty fill writes nothing. `Ready(Ok)` once the write is on its way.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        fill: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_write_idle(cx))?;
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        if buf.capacity() == 0 {
            buf.reserve(WRITE_START);
        }
        if let Err(e) = fill(&mut buf) {
            self.spare = buf;
            return Poll::Ready(Err(e));
        }
        if buf.is_empty() {
            self.spare = buf;
            return Poll::Ready(Ok(()));
        }
        self.writer.start(move |mut half| async move {
            let (result, buf) = half.write_all(buf).await;
            (half, result.map(drop), buf)
        });
        // Polled once so the operation is submitted now, not when the caller next polls; a
        // write that completes at once (epoll) is settled here.
        if let Poll::Ready(Some((result, buf))) = self.writer.poll_done(cx) {
            self.spare = buf;
            if let Err(e) = result {
                self.failed = Some(e);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for RingSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buffered() == 0 && out.remaining() > 0 {
            if matches!(this.reader, Half::Idle(_)) {
                this.start_read();
            }
            match ready!(this.reader.poll_done(cx)) {
                Some((Ok(n), buf)) => {
                    this.streaming = n == READ_AHEAD;
                    // End of stream (`n == 0`) drops the buffer with `buf` here.
                    if n > 0 {
                        this.buf = buf;
                    }
                }
                Some((Err(e), _)) => {
                    this.streaming = false;
                    return Poll::Ready(Err(e));
                }
                None => return Poll::Ready(Err(moving())),
            }
        }
        this.serve(out);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RingSocket {
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
        let mut n = 0;
        ready!(self.poll_send(cx, |out| {
            for b in bufs {
                out.extend_from_slice(b);
                n += b.len();
            }
            Ok(())
        }))?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_idle(cx))?;
        // Everything is out: the burst is over, and the connection keeps no write buffer.
        self.spare = Vec::new();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        self.writer.start(|mut half| async move {
            let result = half.shutdown().await;
            (half, result, Vec::new())
        });
        match ready!(self.writer.poll_done(cx)) {
            Some((result, _)) => Poll::Ready(result),
            None => Poll::Ready(Err(moving())),
        }
    }
}

#[cfg(test)]
mod tests;
