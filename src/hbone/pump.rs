//! The byte pump between a TCP socket and one HBONE stream, one task per connection, on its core.
//!
//! TCP → stream: reads land in a `BytesMut` whose filled part is frozen into a `Bytes` and handed
//! to h2 without a copy (TLS encryption is the one copy). Sending respects HTTP/2 flow control:
//! the pump reserves capacity for what it read and waits until the peer's window grants it, so
//! h2 never buffers more than one read per stream. Reads start small and move to the large size
//! after a read fills its buffer, as in `net::copy`; while the flow is quiet (small reads) the
//! pump waits for readability before it takes a buffer, so an idle connection pins none (under
//! io_uring a pending read owns its buffer).
//!
//! Stream → TCP: each DATA frame's `Bytes` is written to the socket as it is, and its bytes are
//! released to the peer's window only once written: a slow reader slows the sender.
//!
//! End of stream: a TCP EOF becomes END_STREAM, and END_STREAM becomes `shutdown(Write)`; the
//! other direction keeps flowing (half-close). An error in either direction ends both and resets
//! the stream (RST_STREAM CANCEL), so the peer learns the connection failed rather than ended.

use std::future::{Future, poll_fn};

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::net::Side;
use crate::net::buffers::SMALL;
use crate::net::copy::{ByteCounter, CopyError, SpliceRead};

/// Copies between `tcp` and the stream until both directions have ended or either fails.
///
/// `(tcp_end, stream_end)` say which end of the proxied connection each is, so that an error
/// names the side that failed: outbound, the socket is the client pod's (downstream) and the
/// stream leads upstream; inbound, the stream came from downstream and the socket goes to the
/// destination pod. `(to_stream, to_tcp)` count each direction's bytes; the caller picks them
/// from its `Transferred` by the same reasoning (bytes from downstream are `sent`).
///
/// Not an `async fn`: the future keeps every argument of an `async fn` for its whole life, even
/// once moved out, so the socket (80 bytes) would sit in every idle connection's task beside
/// the two halves it is split into. Split first, the future captures only what it uses.
pub fn bidirectional<'a>(
    tcp: TcpStream,
    mut send: SendStream<Bytes>,
    recv: RecvStream,
    (tcp_end, stream_end): (Side, Side),
    large: usize,
    (to_stream, to_tcp): (&'a ByteCounter, &'a ByteCounter),
) -> impl Future<Output = Result<(), CopyError>> + 'a {
    let (r, w) = tcp.into_split();
    async move {
        let result = {
            let up = tcp_to_stream(r, &mut send, (tcp_end, stream_end), large, to_stream);
            let down = stream_to_tcp(recv, w, (stream_end, tcp_end), to_tcp);
            let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
            monoio::select! {
                r = &mut up => match r { Ok(()) => down.await, Err(e) => Err(e) },
                r = &mut down => match r { Ok(()) => up.await, Err(e) => Err(e) },
            }
        };
        if result.is_err() {
            send.send_reset(Reason::CANCEL);
        }
        result
    }
}

async fn tcp_to_stream<R: SpliceRead>(
    mut r: R,
    send: &mut SendStream<Bytes>,
    (from, to): (Side, Side),
    large: usize,
    counter: &ByteCounter,
) -> Result<(), CopyError> {
    let write_err = |e: h2::Error| CopyError::Write {
        side: to,
        source: h2_io_error(e),
    };
    let mut size = SMALL;
    let mut buf = BytesMut::new();
    loop {
        if size == SMALL && buf.capacity() == 0 {
            // Quiet flow: wait until the socket has bytes before taking a buffer, so an idle
            // connection's pending read pins none (under io_uring a read owns its buffer for as
            // long as it waits). Bulk flows (`size` large) read straight away.
            r.readable()
                .await
                .map_err(|source| CopyError::Read { side: from, source })?;
            buf.reserve(SMALL);
        }
        let wanted = buf.capacity();
        let (res, b) = r.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) => {
                return send.send_data(Bytes::new(), true).map_err(write_err);
            }
            Ok(n) => n,
            Err(source) => return Err(CopyError::Read { side: from, source }),
        };
        let mut chunk = buf.split().freeze();
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len());
            let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(write_err(e)),
                None => return Err(write_err(h2::Error::from(Reason::CANCEL))),
            };
            let part = chunk.split_to(granted.min(chunk.len()));
            send.send_data(part, false).map_err(write_err)?;
        }
        counter.add(n as u64);
        // Grow after a full read (bulk data); shrink after a short one (the flow went quiet) so
        // the next pending read does not pin a large buffer.
        if n == wanted && size < large {
            size = large;
        } else if n < SMALL && size > SMALL {
            size = SMALL;
        }
        if size == SMALL {
            // The next read waits for readiness first and takes a fresh small buffer then.
            buf = BytesMut::new();
        } else if buf.capacity() < size {
            // Reclaims the allocation when h2 has released every chunk of it, else allocates.
            buf.reserve(size);
        }
    }
}

async fn stream_to_tcp<W: AsyncWriteRent>(
    mut recv: RecvStream,
    mut w: W,
    (from, to): (Side, Side),
    counter: &ByteCounter,
) -> Result<(), CopyError> {
    loop {
        let data = match poll_fn(|cx| recv.poll_data(cx)).await {
            None => {
                return w
                    .shutdown()
                    .await
                    .map_err(|source| CopyError::Write { side: to, source });
            }
            Some(Err(e)) => {
                return Err(CopyError::Read {
                    side: from,
                    source: h2_io_error(e),
                });
            }
            Some(Ok(data)) => data,
        };
        let n = data.len();
        let (res, _) = w.write_all(data).await;
        res.map_err(|source| CopyError::Write { side: to, source })?;
        // Only now may the peer send these bytes again: flow control tracks our socket.
        let _ = recv.flow_control().release_capacity(n);
        counter.add(n as u64);
    }
}

/// h2 errors as IO errors, so the copy error type stays one for every pump.
fn h2_io_error(e: h2::Error) -> std::io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| std::io::Error::other("h2 IO error"))
    } else {
        std::io::Error::other(e)
    }
}
