//! The byte pump between a TCP socket and one HBONE stream, one task per connection, on its core.
//!
//! TCP → stream: reads land in a `BytesMut` whose filled part is frozen into a `Bytes` and handed
//! to h2 without a copy (TLS encryption is the one copy). Sending respects HTTP/2 flow control:
//! the pump reserves capacity for what it read and waits until the peer's window grants it, so
//! h2 never buffers more than one read per stream. Reads start small and move to the large size
//! after a read fills its buffer, as in `net::copy`; while the flow is quiet (small reads) the
//! pump waits for readability before it takes a buffer, so an idle connection pins none (under
//! io_uring a pending read owns its buffer), and under io_uring the read that follows is a
//! direct `recv` rather than a second trip through the ring.
//!
//! Stream → TCP: each DATA frame's `Bytes` is written to the socket as it is, and its bytes are
//! released to the peer's window only once written: a slow reader slows the sender.
//!
//! End of stream: a TCP EOF becomes END_STREAM, and END_STREAM becomes `shutdown(Write)`; the
//! other direction keeps flowing (half-close). An error in either direction ends both and resets
//! the stream (RST_STREAM CANCEL), so the peer learns the connection failed rather than ended.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;

use crate::net::Side;
use crate::net::buffers::SMALL;
use crate::net::copy::{ByteCounter, CopyError, SpliceRead};
use crate::sys::socket;

type ReadHalf = OwnedReadHalf<TcpStream>;
type WriteHalf = OwnedWriteHalf<TcpStream>;

/// A socket operation in flight. It owns the half it works on (and its buffer) and hands them
/// back with its result, so that no future borrows from the pump, and it lives on the heap only
/// while it runs: the pump keeps none inline.
type Op<T> = Pin<Box<dyn Future<Output = T>>>;

/// Copies between `tcp` and the stream until both directions have ended or either fails.
///
/// `(tcp_end, stream_end)` say which end of the proxied connection each is, so that an error
/// names the side that failed: outbound, the socket is the client pod's (downstream) and the
/// stream leads upstream; inbound, the stream came from downstream and the socket goes to the
/// destination pod. `(to_stream, to_tcp)` count each direction's bytes; the caller picks them
/// from its `Transferred` by the same reasoning (bytes from downstream are `sent`).
pub fn bidirectional<'a>(
    tcp: TcpStream,
    send: SendStream<Bytes>,
    recv: RecvStream,
    ends: (Side, Side),
    large: usize,
    counters: (&'a ByteCounter, &'a ByteCounter),
) -> Pump<'a> {
    let (r, w) = tcp.into_split();
    Pump {
        send,
        recv,
        up: Up::Readable(readable(r)),
        down: Down::Receiving(w),
        size: SMALL,
        large,
        read_at_once: !monoio::utils::is_legacy(),
        ends,
        counters,
    }
}

/// The pump's state, written out rather than as two `async fn`s raced in a `select!`: an
/// `async fn`'s state is as large as its largest step and keeps its arguments beside what they
/// are moved into, so the two directions cost the sum of their largest steps (the write of a
/// frame, a read with its buffer) on every idle connection (848 bytes), though an idle
/// connection only waits for readability on one side and for a frame on the other. Here each
/// direction is a small enum whose socket operation is boxed while it runs.
pub struct Pump<'a> {
    send: SendStream<Bytes>,
    recv: RecvStream,
    up: Up,
    down: Down,
    /// The next read's size: `SMALL` while the flow is quiet, `large` after a read filled its
    /// buffer (as in `net::copy`).
    size: usize,
    large: usize,
    /// io_uring: the read after a wait for readability is a direct `recv` (`read_now`).
    read_at_once: bool,
    /// `(tcp_end, stream_end)`.
    ends: (Side, Side),
    /// `(to_stream, to_tcp)`.
    counters: (&'a ByteCounter, &'a ByteCounter),
}

/// TCP → stream.
enum Up {
    /// Quiet flow: waiting until the socket has bytes before taking a buffer, so an idle
    /// connection's pending read pins none (under io_uring a read owns its buffer for as long
    /// as it waits).
    Readable(Op<(ReadHalf, io::Result<()>)>),
    /// A read in flight: the half, the buffer, the buffer's capacity when the read started (a
    /// read that fills it means bulk data) and the result.
    Reading(Op<(ReadHalf, BytesMut, usize, io::Result<usize>)>),
    /// Handing `chunk` to h2 as the peer's window grants capacity (reserved for all of
    /// `chunk`): h2 never buffers more than one read per stream. `buf` is what is left of the
    /// read buffer, reused for the next read when the flow is bulk.
    Sending {
        r: ReadHalf,
        buf: BytesMut,
        chunk: Bytes,
    },
    /// The socket reached end of stream: END_STREAM is next.
    Eof,
    /// END_STREAM sent (or the pump failed).
    Done,
}

/// Stream → TCP.
enum Down {
    /// Waiting for the next DATA frame.
    Receiving(WriteHalf),
    /// Writing a frame of this many bytes to the socket; they are released to the peer's
    /// window once written.
    Writing(Op<(WriteHalf, usize, io::Result<()>)>),
    /// END_STREAM came: `shutdown(Write)` in flight.
    Closing(Op<io::Result<()>>),
    /// Shut down (or the pump failed).
    Done,
}

/// The wait for readability, as a future the pump boxes (and `idle_wait_size` measures).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its argument beside the half it waits on"
)]
fn wait_readable(r: ReadHalf) -> impl Future<Output = (ReadHalf, io::Result<()>)> {
    async move {
        let res = r.readable().await;
        (r, res)
    }
}

fn readable(r: ReadHalf) -> Op<(ReadHalf, io::Result<()>)> {
    Box::pin(wait_readable(r))
}

fn read(mut r: ReadHalf, buf: BytesMut) -> Op<(ReadHalf, BytesMut, usize, io::Result<usize>)> {
    let wanted = buf.capacity();
    Box::pin(async move {
        let (res, buf) = r.read(buf).await;
        (r, buf, wanted, res)
    })
}

fn write(mut w: WriteHalf, data: Bytes) -> Op<(WriteHalf, usize, io::Result<()>)> {
    let n = data.len();
    Box::pin(async move {
        let (res, _) = w.write_all(data).await;
        (w, n, res.map(drop))
    })
}

fn shutdown(mut w: WriteHalf) -> Op<io::Result<()>> {
    Box::pin(async move { w.shutdown().await })
}

/// Bytes of the one heap block an idle connection's pump holds besides itself: its wait for
/// readability (`tests/idle_sizes.rs` prints it for `perf/notes-hbone.md`).
pub fn idle_wait_size() -> usize {
    fn size<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size(wait_readable)
}

impl Future for Pump<'_> {
    type Output = Result<(), CopyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let pump = self.get_mut();
        let up = pump.poll_up(cx);
        let down = match up {
            Poll::Ready(Err(_)) => Poll::Pending,
            _ => pump.poll_down(cx),
        };
        match (up, down) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => {
                // An error in either direction ends both (their halves close now) and resets
                // the stream, so the peer learns the connection failed rather than ended.
                pump.up = Up::Done;
                pump.down = Down::Done;
                pump.send.send_reset(Reason::CANCEL);
                Poll::Ready(Err(e))
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}

impl Pump<'_> {
    /// Drives TCP → stream until it waits or ends. Each step takes the state out (leaving
    /// `Done`, which is what an error leaves too) and puts the next one back.
    fn poll_up(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CopyError>> {
        let (from, to) = self.ends;
        let read_err = |source| CopyError::Read { side: from, source };
        let write_err = |e: h2::Error| CopyError::Write {
            side: to,
            source: h2_io_error(e),
        };
        loop {
            self.up = match std::mem::replace(&mut self.up, Up::Done) {
                Up::Readable(mut op) => {
                    let Poll::Ready((r, res)) = op.as_mut().poll(cx) else {
                        self.up = Up::Readable(op);
                        return Poll::Pending;
                    };
                    res.map_err(read_err)?;
                    let buf = BytesMut::with_capacity(SMALL);
                    if !self.read_at_once {
                        Up::Reading(read(r, buf))
                    } else {
                        self.read_now(r, buf).map_err(read_err)?
                    }
                }
                Up::Reading(mut op) => {
                    let Poll::Ready((r, buf, wanted, res)) = op.as_mut().poll(cx) else {
                        self.up = Up::Reading(op);
                        return Poll::Pending;
                    };
                    let n = res.map_err(read_err)?;
                    self.took(r, buf, wanted, n)
                }
                Up::Sending { r, buf, mut chunk } if !chunk.is_empty() => {
                    // Capacity was reserved for `chunk` when it came (or shrank): a wake only
                    // asks whether it has been granted.
                    let granted = match self.send.poll_capacity(cx) {
                        Poll::Pending => {
                            self.up = Up::Sending { r, buf, chunk };
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(n))) => n,
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(write_err(e))),
                        Poll::Ready(None) => {
                            return Poll::Ready(Err(write_err(Reason::CANCEL.into())));
                        }
                    };
                    let part = chunk.split_to(granted.min(chunk.len()));
                    let n = part.len();
                    self.send.send_data(part, false).map_err(write_err)?;
                    self.counters.0.add(n as u64);
                    if !chunk.is_empty() {
                        self.send.reserve_capacity(chunk.len());
                    }
                    Up::Sending { r, buf, chunk }
                }
                Up::Sending { r, mut buf, .. } => {
                    if self.size == SMALL {
                        // The next read waits for readiness first and takes a fresh small
                        // buffer then.
                        Up::Readable(readable(r))
                    } else {
                        if buf.capacity() < self.size {
                            // Reclaims the allocation when h2 has released every chunk of it,
                            // else allocates.
                            buf.reserve(self.size);
                        }
                        Up::Reading(read(r, buf))
                    }
                }
                Up::Eof => {
                    self.send.send_data(Bytes::new(), true).map_err(write_err)?;
                    return Poll::Ready(Ok(()));
                }
                Up::Done => return Poll::Ready(Ok(())),
            };
        }
    }

    /// The read after a wait for readability, under io_uring: a non-blocking `recv` now rather
    /// than a read operation through the ring, whose completion the task would see only at the
    /// core's next park (one more ring round trip per quiet read, on every request of a
    /// request/response flow). A socket that turns out empty is waited on again.
    fn read_now(&mut self, r: ReadHalf, mut buf: BytesMut) -> io::Result<Up> {
        let fd = SpliceRead::fd(&r);
        loop {
            match socket::recv_into(fd, &mut buf) {
                Ok(n) => return Ok(self.took(r, buf, SMALL, n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Up::Readable(readable(r)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// What follows a read of `n` bytes into `buf` (which had room for `wanted`): the chunk
    /// goes to h2, or END_STREAM at end of stream.
    fn took(&mut self, r: ReadHalf, mut buf: BytesMut, wanted: usize, n: usize) -> Up {
        if n == 0 {
            return Up::Eof;
        }
        // Grow after a full read (bulk data); shrink after a short one (the flow went quiet)
        // so the next pending read does not pin a large buffer.
        if n == wanted && self.size < self.large {
            self.size = self.large;
        } else if n < SMALL && self.size > SMALL {
            self.size = SMALL;
        }
        let chunk = buf.split().freeze();
        self.send.reserve_capacity(chunk.len());
        Up::Sending { r, buf, chunk }
    }

    /// Drives stream → TCP until it waits or ends, as `poll_up` does.
    fn poll_down(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CopyError>> {
        let (to, from) = self.ends;
        let write_err = |source| CopyError::Write { side: to, source };
        loop {
            self.down = match std::mem::replace(&mut self.down, Down::Done) {
                Down::Receiving(w) => match self.recv.poll_data(cx) {
                    Poll::Pending => {
                        self.down = Down::Receiving(w);
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(data))) => Down::Writing(write(w, data)),
                    Poll::Ready(None) => Down::Closing(shutdown(w)),
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(CopyError::Read {
                            side: from,
                            source: h2_io_error(e),
                        }));
                    }
                },
                Down::Writing(mut op) => {
                    let Poll::Ready((w, n, res)) = op.as_mut().poll(cx) else {
                        self.down = Down::Writing(op);
                        return Poll::Pending;
                    };
                    res.map_err(write_err)?;
                    // Only now may the peer send these bytes again: flow control tracks our
                    // socket.
                    let _ = self.recv.flow_control().release_capacity(n);
                    self.counters.1.add(n as u64);
                    Down::Receiving(w)
                }
                Down::Closing(mut op) => {
                    let Poll::Ready(res) = op.as_mut().poll(cx) else {
                        self.down = Down::Closing(op);
                        return Poll::Pending;
                    };
                    return Poll::Ready(res.map_err(write_err));
                }
                Down::Done => return Poll::Ready(Ok(())),
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::AsyncReadRentExt;
    use monoio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = listener.accept().await.unwrap();
        (a, b)
    }

    type Halves = (SendStream<Bytes>, RecvStream);

    /// One HTTP/2 stream over loopback (plaintext; both connections driven by their own
    /// tasks): the client's halves and the server's.
    async fn stream() -> (Halves, Halves) {
        let (c, s) = pair().await;
        let c = c.try_into_poll_io().map_err(|(e, _)| e).unwrap();
        let s = s.try_into_poll_io().map_err(|(e, _)| e).unwrap();
        let server = monoio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.unwrap();
            let (request, mut respond) = conn.accept().await.unwrap().unwrap();
            let send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            monoio::spawn(async move { while conn.accept().await.is_some() {} });
            (send, request.into_body())
        });
        let (mut client, conn) = h2::client::handshake(c).await.unwrap();
        monoio::spawn(conn);
        let request = http::Request::post("http://pod/").body(()).unwrap();
        let (response, send) = client.send_request(request, false).unwrap();
        let server = server.await;
        let body = response.await.unwrap().into_body();
        ((send, body), server)
    }

    /// Everything `recv` carries until its end, each frame released once read; `Err` with the
    /// reset's reason when the stream is reset.
    async fn drain(recv: &mut RecvStream) -> Result<Vec<u8>, Option<Reason>> {
        let mut all = Vec::new();
        while let Some(frame) = recv.data().await {
            let frame = frame.map_err(|e| e.reason())?;
            let _ = recv.flow_control().release_capacity(frame.len());
            all.extend_from_slice(&frame);
        }
        Ok(all)
    }

    /// END_STREAM becomes the pod's EOF while the pod's reply still flows, and the pod's EOF
    /// becomes END_STREAM: the pump ends cleanly once both have, each direction counted.
    #[monoio::test_all(timer_enabled = true)]
    async fn each_direction_half_closes_on_its_own() {
        let ((mut client_send, mut client_recv), (send, recv)) = stream().await;
        let (near, mut pod) = pair().await;
        let (to_stream, to_tcp) = (ByteCounter::default(), ByteCounter::default());
        let ends = (Side::Upstream, Side::Downstream);
        let pump = bidirectional(near, send, recv, ends, 65536, (&to_stream, &to_tcp));
        let peers = async {
            client_send
                .send_data(Bytes::from_static(b"ping"), true)
                .unwrap();
            let (res, got) = pod.read_exact(vec![0; 4]).await;
            res.unwrap();
            assert_eq!(got, b"ping");
            // The client's END_STREAM reached the pod as EOF; the pod can still answer.
            let (res, _) = pod.read(vec![0; 8]).await;
            assert_eq!(res.unwrap(), 0);
            let (res, _) = pod.write_all(b"pong".to_vec()).await;
            res.unwrap();
            pod.shutdown().await.unwrap();
            drain(&mut client_recv).await
        };
        let (result, reply) = monoio::join!(pump, peers);
        result.unwrap();
        assert_eq!(reply.unwrap(), b"pong");
        assert_eq!((to_stream.get(), to_tcp.get()), (4, 4));
    }

    /// A pod that resets its connection fails the pump, naming the pod's side, and the client
    /// gets RST_STREAM CANCEL rather than an end of stream.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_failing_socket_resets_the_stream() {
        let ((_client_send, mut client_recv), (send, recv)) = stream().await;
        let (near, pod) = pair().await;
        let (to_stream, to_tcp) = (ByteCounter::default(), ByteCounter::default());
        let ends = (Side::Upstream, Side::Downstream);
        let pump = bidirectional(near, send, recv, ends, 65536, (&to_stream, &to_tcp));
        crate::sys::socket::set_reset_on_close(&pod).unwrap();
        drop(pod);
        let (result, reply) = monoio::join!(pump, drain(&mut client_recv));
        assert_eq!(result.unwrap_err().side(), Side::Upstream);
        assert_eq!(reply, Err(Some(Reason::CANCEL)));
    }
}
