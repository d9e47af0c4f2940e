//! The socket under an HBONE connection's TLS, as tokio's poll-style IO traits (which
//! tokio-rustls and h2 need) over the core's monoio driver.
//!
//! Runs on a core, as the bottom layer of every HBONE connection (`hbone::tls`).
//!
//! - epoll: monoio's own poll-IO bridge (`TcpStream::try_into_poll_io`), which uses the
//!   driver's registration directly.
//! - io_uring: [`RingSocket`]. monoio's bridge under io_uring registers the socket in an epoll
//!   instance of its own and watches that instance with a one-shot `POLL_ADD`, so every wake
//!   costs an `epoll_wait` on top of the ring, and a read ends only at `WouldBlock`, one more
//!   `recvfrom` (counted in `perf/side-by-side-2026-12-04.md`). `RingSocket` waits with a
//!   `POLL_ADD` on the socket itself and moves bytes with non-blocking `recv`/`sendmsg`; after
//!   a short read, which leaves the socket empty, the next read waits first instead of asking
//!   for a `WouldBlock`. Waiting for readiness, not reading through the ring, keeps idle
//!   connections free of pinned read buffers.
//!
//! Invariant: at most one readiness wait per direction is in flight, and a direction waits only
//! after the socket said (or a short read showed) that it has nothing more to give or take.
//! A `POLL_ADD` checks the socket's state when it is armed, so a byte that arrives between the
//! short read and the wait completes the wait at once: nothing is missed.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use monoio::net::TcpStream;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::Driver;
use crate::sys::socket;

/// A connected socket in the form the core's driver serves best.
#[derive(Debug)]
pub enum Socket {
    Poll(TcpStreamPoll),
    Ring(RingSocket),
}

impl Socket {
    /// Takes over a connected socket for the driver `driver` (the one running this thread).
    pub fn new(tcp: TcpStream, driver: Driver) -> io::Result<Socket> {
        match driver {
            Driver::Legacy => tcp.try_into_poll_io().map(Socket::Poll).map_err(|(e, _)| e),
            Driver::Uring => Ok(Socket::Ring(RingSocket::new(tcp))),
        }
    }
}

/// A readiness wait in flight; it holds the socket, so the descriptor outlives it.
type Wait = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// A socket on io_uring driven through tokio's traits: readiness from the ring, bytes by
/// non-blocking system calls (see the module doc).
pub struct RingSocket {
    /// Taken only by `drop`.
    tcp: Option<Rc<TcpStream>>,
    fd: RawFd,
    read_wait: Option<Wait>,
    write_wait: Option<Wait>,
    /// The last read left the socket empty: the next one waits for readability first.
    drained: bool,
}

impl std::fmt::Debug for RingSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSocket")
            .field("fd", &self.fd)
            .field("reading", &self.read_wait.is_some())
            .field("writing", &self.write_wait.is_some())
            .field("drained", &self.drained)
            .finish()
    }
}

impl RingSocket {
    pub fn new(tcp: TcpStream) -> RingSocket {
        let fd = tcp.as_raw_fd();
        RingSocket {
            tcp: Some(Rc::new(tcp)),
            fd,
            read_wait: None,
            write_wait: None,
            drained: false,
        }
    }

    /// Whether a readiness wait is in flight in either direction.
    pub fn waiting(&self) -> bool {
        self.read_wait.is_some() || self.write_wait.is_some()
    }

    fn wait(&self, read: bool) -> Wait {
        let tcp = self.tcp.clone();
        // `relaxed`: on io_uring a `POLL_ADD` is exact; the flag only matters on epoll.
        Box::pin(async move {
            let Some(tcp) = tcp else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            if read {
                tcp.readable(true).await
            } else {
                tcp.writable(true).await
            }
        })
    }
}

/// Polls a direction's wait, if one is in flight: `Ready(Ok)` once there is none (any more).
fn poll_wait(wait: &mut Option<Wait>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if let Some(w) = wait {
        let r = ready!(w.as_mut().poll(cx));
        *wait = None;
        r?;
    }
    Poll::Ready(Ok(()))
}

impl AsyncRead for RingSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_wait.is_some() {
                ready!(poll_wait(&mut this.read_wait, cx))?;
                this.drained = false;
            }
            if this.drained {
                this.read_wait = Some(this.wait(true));
                continue;
            }
            let room = buf.remaining();
            match socket::recv_now(this.fd, buf) {
                Ok(n) => {
                    // Fewer bytes than there was room for: the socket is empty now.
                    this.drained = n > 0 && n < room;
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
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
        let this = &mut *self;
        loop {
            ready!(poll_wait(&mut this.write_wait, cx))?;
            match socket::send_now(this.fd, bufs) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.write_wait = Some(this.wait(false));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: every write went to the kernel.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket::shutdown_write(self.fd))
    }
}

impl Drop for RingSocket {
    fn drop(&mut self) {
        // A wait still in flight leaves its operation on the ring, holding the descriptor, when
        // it is dropped; then monoio closes the socket once the ring lets go. With none in
        // flight, close at once: one system call where monoio would queue a CLOSE and cancel it.
        let idle = !self.waiting();
        (self.read_wait, self.write_wait) = (None, None);
        match self.tcp.take().map(Rc::try_unwrap) {
            Some(Ok(tcp)) if idle => socket::close_now(tcp),
            _ => {}
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Poll(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Ring(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Poll(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Ring(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Poll(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Ring(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Poll(s) => s.is_write_vectored(),
            Socket::Ring(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Poll(s) => Pin::new(s).poll_flush(cx),
            Socket::Ring(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Poll(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Ring(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
    use monoio::net::TcpListener;

    use super::*;

    fn uring() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("this machine runs io_uring")
    }

    /// A connected pair: ours as a `RingSocket`, the peer as a plain monoio stream.
    async fn pair() -> (RingSocket, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = monoio::join!(TcpStream::connect_addr(addr), l.accept());
        (RingSocket::new(c.unwrap()), s.unwrap().0)
    }

    async fn read(s: &mut RingSocket, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, &mut rb)).await?;
        Ok(rb.filled().len())
    }

    async fn write_all(s: &mut RingSocket, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *s).poll_write(cx, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// 8 MiB each way, more than the socket buffers hold, so both directions wait on the ring
    /// (the peer reads and writes in small bites, slowly at first); every byte arrives in order,
    /// and each side's shutdown reaches the other as end of stream.
    #[test]
    fn moves_bytes_both_ways_through_waits() {
        const LEN: usize = 8 << 20;
        uring().block_on(async {
            let (mut ours, peer) = pair().await;
            let sent = pattern(LEN);
            let (mut peer_r, mut peer_w) = peer.into_split();
            let peer_reads = async {
                monoio::time::sleep(Duration::from_millis(50)).await;
                let mut got = Vec::with_capacity(LEN);
                loop {
                    let (r, buf) = peer_r.read(Vec::<u8>::with_capacity(3000)).await;
                    match r.unwrap() {
                        0 => return got,
                        _ => got.extend_from_slice(&buf),
                    }
                }
            };
            let peer_writes = async {
                monoio::time::sleep(Duration::from_millis(50)).await;
                for chunk in pattern(LEN).chunks(5000) {
                    let (r, _) = peer_w.write_all(chunk.to_vec()).await;
                    r.unwrap();
                }
                monoio::io::AsyncWriteRent::shutdown(&mut peer_w)
                    .await
                    .unwrap();
            };
            let ours_works = async {
                write_all(&mut ours, &sent).await.unwrap();
                poll_fn(|cx| Pin::new(&mut ours).poll_shutdown(cx))
                    .await
                    .unwrap();
                let mut got = Vec::with_capacity(LEN);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match read(&mut ours, &mut buf).await.unwrap() {
                        0 => return got,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
            };
            let (peer_got, (), ours_got) = monoio::join!(peer_reads, peer_writes, ours_works);
            assert!(peer_got == sent, "the peer got other bytes than we sent");
            assert!(ours_got == sent, "we got other bytes than the peer sent");
        });
    }

    /// After a short read (the socket is empty), the next read waits on the ring; bytes that
    /// arrive later complete it, and bytes that arrived before it was armed are not missed.
    #[test]
    fn a_short_read_waits_for_the_next_bytes() {
        uring().block_on(async {
            let (mut ours, mut peer) = pair().await;
            let mut buf = [0u8; 16];
            peer.write_all(b"ab".to_vec()).await.0.unwrap();
            assert_eq!(read(&mut ours, &mut buf).await.unwrap(), 2);
            assert!(ours.drained, "a short read leaves the socket empty");
            // Arrives before the next read arms its wait.
            peer.write_all(b"c".to_vec()).await.0.unwrap();
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(read(&mut ours, &mut buf).await.unwrap(), 1);
            assert_eq!(&buf[..1], b"c");
            // Arrives while the wait is in flight.
            let later = async {
                monoio::time::sleep(Duration::from_millis(20)).await;
                peer.write_all(b"de".to_vec()).await.0.unwrap();
                peer
            };
            let (n, _peer) = monoio::join!(read(&mut ours, &mut buf), later);
            assert_eq!(n.unwrap(), 2);
            assert_eq!(&buf[..2], b"de");
        });
    }

    /// Dropping the socket closes it, whether or not a wait was in flight: the peer reads end
    /// of stream either way, and nothing panics.
    #[test]
    fn drop_closes_with_or_without_a_wait_in_flight() {
        uring().block_on(async {
            for wait_in_flight in [false, true] {
                let (mut ours, mut peer) = pair().await;
                if wait_in_flight {
                    let mut buf = [0u8; 4];
                    let r =
                        monoio::time::timeout(Duration::from_millis(20), read(&mut ours, &mut buf))
                            .await;
                    assert!(r.is_err(), "nothing was sent, the read must wait");
                    // The read future is gone, its wait is not.
                    assert!(ours.waiting());
                }
                drop(ours);
                let (r, _) = monoio::time::timeout(Duration::from_secs(5), peer.read(vec![0u8; 4]))
                    .await
                    .expect("the peer sees the close");
                assert_eq!(r.unwrap(), 0, "wait in flight: {wait_in_flight}");
            }
        });
    }
}
