//! The byte pump between two established streams, one task per connection, on its core.
//!
//! Both directions run concurrently. Each starts with a small pooled buffer (see `net::buffers`:
//! an idle connection pins little); once a read fills it, bulk data is flowing and the
//! direction switches to `splice(2)` through a pipe of its own: the bytes go from one socket to
//! the other inside the kernel, never copied into user space and back (two copies per byte
//! fewer, the largest cost of a plaintext bulk transfer). Spliced, a direction waits for
//! readiness, not in a read, so it pins no buffer at all while the flow is quiet. Where splice
//! is refused (no pipe left, an unusual socket) it carries on with the large pooled buffer.
//!
//! A direction that moves `TURN` bytes without waiting gives way to the rest of its core
//! (`give_way`), so a transfer whose source never runs dry cannot hold the core.
//!
//! A clean EOF on one side is propagated as a FIN (`shutdown`) to the other and the opposite
//! direction keeps running (half-close); the direction that ends second leaves its FIN to the
//! close of both sockets that follows at once. An error in either direction ends both, dropping
//! the sockets. Bytes are added to the caller's counters as each write (or splice out of the pipe)
//! completes, so long-lived connections show progress.

use std::cell::{Cell, OnceCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;

use super::Side;
use super::buffers::{BufferPool, SMALL};
use crate::metrics::Meter;
use crate::sys::splice::{self as sys_splice, Pipe};

/// Bytes a direction may move without waiting before it lets the rest of its core run
/// ([`give_way`]). A direction meets `EAGAIN`, and waits, whenever its source runs dry or its
/// destination is full; a source that never runs dry (a fast sender, a faster reader) would
/// otherwise hold its core, and every other connection on it, until the transfer ends.
///
/// One full pipe. Measured beside eight bulk flows on one runtime (`ZRING_BENCH_BESIDE=8`,
/// plaintext rr × 1, `perf/side-by-side-2026-12-04-evening.md`): p50 162 ms with no turn,
/// 29 ms with 1 MiB turns, 13.6 ms with 256 KiB ones (ztunnel: 91 ms). The price is paid by
/// bulk at many connections per core: plaintext bulk × 64 on one runtime moved 0.87× the bytes
/// at 1.09× the machine's CPU per GiB; 4 MiB turns cost almost nothing there and waited 126 ms.
const TURN: usize = 256 * 1024;

/// Bytes moved so far in each direction of one connection.
#[derive(Debug, Default)]
pub struct Transferred {
    /// From the connection's initiator (downstream) toward the upstream.
    pub sent: ByteCounter,
    /// From the upstream back to the initiator.
    pub received: ByteCounter,
}

/// One direction's byte count: the connection's own total (for its access log line) and, once
/// the connection's label set is known, that series' counter on this core's metrics shard, so
/// long connections show progress on every scrape.
#[derive(Debug, Default)]
pub struct ByteCounter {
    total: Cell<u64>,
    meter: OnceCell<Meter>,
}

impl ByteCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.total.set(self.total.get() + n);
        if let Some(m) = self.meter.get() {
            m.add(n);
        }
    }

    pub fn get(&self) -> u64 {
        self.total.get()
    }

    /// From now on bytes also count into `meter`; the bytes counted so far are added to it at
    /// once. The first meter attached wins.
    pub fn attach(&self, meter: Meter) {
        if self.meter.get().is_none() {
            meter.add(self.total.get());
            let _ = self.meter.set(meter);
        }
    }
}

/// Why a pump stopped early; `side` is the end whose socket (or stream) failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading from {side:?}: {source}")]
    Read { side: Side, source: io::Error },
    #[error("writing to {side:?}: {source}")]
    Write { side: Side, source: io::Error },
}

impl CopyError {
    /// The end whose socket or stream failed.
    pub fn side(&self) -> Side {
        match self {
            CopyError::Read { side, .. } | CopyError::Write { side, .. } => *side,
        }
    }
}

/// Copies `down_r → up_w` and `up_r → down_w` until both directions have seen EOF, or either
/// fails. After a clean end each socket is closed whole ([`Reunite`]): dropping the write
/// halves would shut them down again, two failing `shutdown` calls per connection.
///
/// The direction that ends second sends no `shutdown` of its own: by then the socket it writes
/// to has been read to its EOF, so the close right after sends that socket's FIN, with nothing
/// unread that would turn it into a reset. One system call fewer per connection.
pub async fn bidirectional<DR, DW, UR, UW>(
    (down_r, down_w): (DR, DW),
    (up_r, up_w): (UR, UW),
    pool: &BufferPool,
    counts: &Transferred,
) -> Result<(), CopyError>
where
    DR: SpliceRead + Reunite<DW>,
    DW: SpliceWrite,
    UR: SpliceRead + Reunite<UW>,
    UW: SpliceWrite,
{
    let ended = Cell::new(false);
    let to_up = one_way(
        down_r,
        up_w,
        (Side::Downstream, Side::Upstream),
        pool,
        &counts.sent,
        &ended,
    );
    let to_down = one_way(
        up_r,
        down_w,
        (Side::Upstream, Side::Downstream),
        pool,
        &counts.received,
        &ended,
    );
    let (mut to_up, mut to_down) = (std::pin::pin!(to_up), std::pin::pin!(to_down));
    let ((down_r, up_w), (up_r, down_w)) = monoio::select! {
        r = &mut to_up => { let up = r?; (up, to_down.await?) }
        r = &mut to_down => { let down = r?; (to_up.await?, down) }
    };
    down_r.close(down_w);
    up_r.close(up_w);
    Ok(())
}

/// Closes a socket from its two halves without the write half's own shutdown on drop.
pub trait Reunite<W> {
    fn close(self, w: W);
}

impl Reunite<OwnedWriteHalf<TcpStream>> for OwnedReadHalf<TcpStream> {
    fn close(self, w: OwnedWriteHalf<TcpStream>) {
        // Halves of different sockets (which `bidirectional` never pairs) drop as they are.
        // Closed with close(2) rather than dropped: see `socket::close_now`. Both directions
        // of the copy finished, every operation on the socket was awaited, so the stream is
        // its descriptor's only owner.
        if let Ok(stream) = self.reunite(w) {
            crate::sys::socket::close_now(stream);
        }
    }
}

/// Copies until EOF on `r`, then shuts down `w`'s write side, unless the other direction of
/// the connection has already ended (`ended`): then the caller's close of both sockets sends
/// the FIN (see [`bidirectional`]). Returns both ends.
pub async fn one_way<R, W>(
    mut r: R,
    mut w: W,
    (from, to): (Side, Side),
    pool: &BufferPool,
    counter: &ByteCounter,
    ended: &Cell<bool>,
) -> Result<(R, W), CopyError>
where
    R: SpliceRead,
    W: SpliceWrite,
{
    let mut buf = pool.small();
    let mut large = false;
    // Under io_uring every read and write is a trip through the ring, which lets the core's
    // other tasks run: only epoll, where they complete at once while the socket has bytes,
    // needs turns here.
    let takes_turns = monoio::utils::is_legacy();
    let mut unwaited = 0;
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) => {
                pool.put(buf);
                return finish(r, w, to, ended).await;
            }
            Ok(n) => n,
            Err(source) => {
                pool.put(buf);
                return Err(CopyError::Read { side: from, source });
            }
        };
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if let Err(source) = res {
            pool.put(buf);
            return Err(CopyError::Write { side: to, source });
        }
        counter.add(n as u64);
        if takes_turns {
            unwaited += n;
            if unwaited >= TURN {
                unwaited = 0;
                crate::task::yield_to_queue().await;
            }
        }
        // A full small read means bulk data is flowing: switch to the large buffer. A short
        // read on the large one means the flow went quiet: give the large buffer back.
        if !large && n == buf.capacity() {
            if let Some(pipe) = splice_pipe(&r, &w) {
                pool.put(buf);
                return spliced(r, w, pipe, (from, to), counter, ended).await;
            }
            pool.put(std::mem::replace(&mut buf, pool.large()));
            large = true;
        } else if large && n < SMALL {
            pool.put(std::mem::replace(&mut buf, pool.small()));
            large = false;
        } else {
            buf.clear();
        }
    }
}

/// The end of one direction at EOF: the FIN to `w` (a `shutdown`) when the other direction is
/// still running, else nothing (the close that follows sends it); marks the direction ended.
async fn finish<R, W: SpliceWrite>(
    r: R,
    mut w: W,
    to: Side,
    ended: &Cell<bool>,
) -> Result<(R, W), CopyError> {
    if !ended.replace(true) {
        w.shutdown()
            .await
            .map_err(|source| CopyError::Write { side: to, source })?;
    }
    Ok((r, w))
}

/// A socket end that can also be spliced: its descriptor, and a wait for readiness.
pub trait SpliceRead: AsyncReadRent {
    fn fd(&self) -> RawFd;
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
}

/// The writing end's counterpart of [`SpliceRead`].
pub trait SpliceWrite: AsyncWriteRent {
    fn fd(&self) -> RawFd;
    fn writable(&self) -> impl Future<Output = io::Result<()>>;
}

// Readiness is asked for strictly (`relaxed = false`): under epoll, monoio's own readiness
// state does not know that our splice drained the socket, so a relaxed wait could return at
// once, forever; the strict one checks with poll(2) first. Under io_uring it is a POLL_ADD.
impl SpliceRead for OwnedReadHalf<TcpStream> {
    fn fd(&self) -> RawFd {
        sys_splice::read_half(self).as_raw_fd()
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        sys_splice::read_half(self).readable(false)
    }
}

impl SpliceWrite for OwnedWriteHalf<TcpStream> {
    fn fd(&self) -> RawFd {
        sys_splice::write_half(self).as_raw_fd()
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        sys_splice::write_half(self).writable(false)
    }
}

/// A pipe for splicing `r` into `w`, with both sockets made non-blocking (splice honours the
/// descriptors' own mode); `None` when that fails (out of descriptors, say): the caller copies.
fn splice_pipe<R: SpliceRead, W: SpliceWrite>(r: &R, w: &W) -> Option<Pipe> {
    #[cfg(test)]
    if tests::NO_SPLICE.with(Cell::get) {
        return None;
    }
    sys_splice::set_nonblocking(r.fd()).ok()?;
    sys_splice::set_nonblocking(w.fd()).ok()?;
    sys_splice::pipe().ok()
}

/// Copies `r` to `w` through `pipe` with splice(2) until EOF on `r`, then ends as [`one_way`]
/// does. The pipe is emptied into `w` before the next splice out of `r`, so each splice in may
/// fill it (its whole capacity is asked for), and nothing is left in it when an error ends the
/// copy.
///
/// The readiness wait comes only after a splice in said `EAGAIN`. A splice that moved less than
/// the pipe holds did empty the socket, but in a bulk flow more bytes are there by the next
/// step: five waits in six armed after such a splice completed at once. Under io_uring each of
/// those waits was a trip round the core's loop, one per splice, and it cost the receiving
/// node's zring twice the CPU per GiB at plaintext bulk × 64
/// (`perf/side-by-side-2026-12-04-afternoon.md`). The wait checks the socket's state when it
/// starts (io_uring's `POLL_ADD`; a `poll` first under epoll: monoio's non-relaxed wait), so
/// bytes that arrived in between are not missed.
async fn spliced<R: SpliceRead, W: SpliceWrite>(
    r: R,
    w: W,
    pipe: Pipe,
    (from, to): (Side, Side),
    counter: &ByteCounter,
    ended: &Cell<bool>,
) -> Result<(R, W), CopyError> {
    let read_err = |source| CopyError::Read { side: from, source };
    let write_err = |source| CopyError::Write { side: to, source };
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    // Bytes moved since this direction last waited: at [`TURN`] it gives way.
    let mut unwaited = 0;
    loop {
        let n = match sys_splice::splice(r.fd(), pipe_w, pipe.capacity) {
            Ok(0) => return finish(r, w, to, ended).await,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                r.readable().await.map_err(read_err)?;
                unwaited = 0;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        let mut left = n;
        while left > 0 {
            match sys_splice::splice(pipe_r, w.fd(), left) {
                Ok(0) => return Err(write_err(io::ErrorKind::WriteZero.into())),
                Ok(m) => {
                    left -= m;
                    counter.add(m as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    w.writable().await.map_err(write_err)?;
                    unwaited = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(write_err(e)),
            }
        }
        unwaited += n;
        if unwaited >= TURN {
            give_way(&r).await.map_err(read_err)?;
            unwaited = 0;
        }
    }
}

/// Lets the core's other tasks run, and see their I/O, before this direction goes on.
///
/// Under io_uring: a readiness wait on `r` (a `POLL_ADD`), which completes through the ring like
/// any other connection's I/O. The task leaves the queue until the core next reaps completions,
/// and with deferred task work (the default rings) the core reaps only when it parks, that is
/// once every queued task has run. A yield that stays in the queue would keep the core from
/// parking, and the other connections' completions would wait with it. Under epoll: a place at
/// the back of the core's queue ([`crate::task::yield_to_queue`]); the core polls epoll between
/// rounds of its queue.
async fn give_way<R: SpliceRead>(r: &R) -> io::Result<()> {
    if monoio::utils::is_legacy() {
        crate::task::yield_to_queue().await;
        Ok(())
    } else {
        r.readable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::{AsyncReadRentExt, Splitable};
    use monoio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = monoio::join!(TcpStream::connect_addr(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    thread_local! {
        /// Makes this thread's pumps copy where they would splice (the fallback path).
        pub(super) static NO_SPLICE: Cell<bool> = const { Cell::new(false) };
    }

    /// The bulk direction splices: no large buffer is ever taken.
    #[monoio::test_all(timer_enabled = true)]
    async fn copies_both_ways_and_propagates_half_close() {
        NO_SPLICE.with(|c| c.set(false));
        let pool = half_close_case().await;
        let (small, large) = pool.free_counts();
        assert!(small >= 1, "small buffers return to the pool: {small}");
        assert_eq!(large, 0, "a spliced direction takes no large buffer");
    }

    /// Where splice is refused the bulk direction copies through the large buffer.
    #[monoio::test_all(timer_enabled = true)]
    async fn copies_through_buffers_where_splice_is_refused() {
        NO_SPLICE.with(|c| c.set(true));
        let pool = half_close_case().await;
        NO_SPLICE.with(|c| c.set(false));
        let (small, large) = pool.free_counts();
        assert!(
            small >= 1 && large >= 1,
            "buffers return to the pool: {small} {large}"
        );
    }

    /// client ⇄ [a | pump | b] ⇄ server: checks bytes, counts and half-close; returns the pool.
    async fn half_close_case() -> BufferPool {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pool = BufferPool::new(65536);
        let counts = Transferred::default();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let expect = payload.clone();
        let pump = bidirectional(a.into_split(), b.into_split(), &pool, &counts);
        let peers = async move {
            // Client sends everything then half-closes; server reads to EOF, then answers.
            let (r, _) = client.write_all(payload).await;
            r.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            loop {
                let (r, buf) = server.read(Vec::with_capacity(8192)).await;
                if r.unwrap() == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, expect);
            pong_then_fin(&mut client, &mut server).await;
        };
        let (pumped, ()) = monoio::join!(pump, peers);
        pumped.unwrap();
        assert_eq!(counts.sent.get(), 300_000);
        assert_eq!(counts.received.get(), 4);
        pool
    }

    /// The server answers `pong` and sends its FIN; the client reads the answer, then EOF.
    async fn pong_then_fin(client: &mut TcpStream, server: &mut TcpStream) {
        let (r, _) = server.write_all(b"pong".to_vec()).await;
        r.unwrap();
        server.shutdown().await.unwrap();
        let (r, buf) = client.read_exact(vec![0u8; 4]).await;
        r.unwrap();
        assert_eq!(&buf, b"pong");
        let (r, _) = client.read(Vec::with_capacity(4)).await;
        assert_eq!(r.unwrap(), 0, "the server's FIN reaches the client");
    }

    /// crr's shape with the server closing first: the server's FIN is a `shutdown`, the
    /// client's (the direction that ends second) goes out with the close of both sockets, and
    /// each peer still reads everything, then EOF, not a reset.
    #[monoio::test_all(timer_enabled = true)]
    async fn the_second_fin_goes_out_with_the_close() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pool = BufferPool::new(65536);
        let counts = Transferred::default();
        let pump = bidirectional(a.into_split(), b.into_split(), &pool, &counts);
        let peers = async move {
            let (r, _) = client.write_all(b"ping".to_vec()).await;
            r.unwrap();
            let (r, buf) = server.read_exact(vec![0u8; 4]).await;
            r.unwrap();
            assert_eq!(&buf, b"ping");
            pong_then_fin(&mut client, &mut server).await;
            client.shutdown().await.unwrap();
            let (r, _) = server.read(Vec::with_capacity(4)).await;
            assert_eq!(r.unwrap(), 0, "the client's FIN reaches the server");
        };
        let (pumped, ()) = monoio::join!(pump, peers);
        pumped.unwrap();
        assert_eq!((counts.sent.get(), counts.received.get()), (4, 4));
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn reset_on_one_side_ends_both() {
        let (client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pool = BufferPool::new(65536);
        let counts = Transferred::default();
        // The client resets its connection: linger 0 then close.
        crate::sys::socket::set_reset_on_close(&client).unwrap();
        drop(client);
        let r = bidirectional(a.into_split(), b.into_split(), &pool, &counts).await;
        assert!(r.is_err(), "a reset must surface as an error: {r:?}");
        // The upstream side sees its connection end.
        let (r, _) = server.read(Vec::with_capacity(16)).await;
        assert!(matches!(r, Ok(0) | Err(_)));
    }

    /// A direction whose source never runs dry shares its core. The source's socket buffers
    /// hold megabytes before the copy starts and the destination's take them all, so the copy
    /// never meets `EAGAIN`; beside it, on the same core, an observer records the bytes copied
    /// each time it gets to run. Between two of its turns the copy may move a few pipes' worth
    /// (a turn's bytes and one splice more), never the bulk of the transfer. Every byte arrives.
    fn a_busy_direction_gives_way(driver: crate::core::Driver, splice: bool) {
        use std::io::{Read, Write};
        use std::rc::Rc;
        const BIG: libc::c_int = 16 << 20;
        const WANT: usize = 8 << 20;
        let case = async move {
            NO_SPLICE.with(|c| c.set(!splice));
            let std_pair = || {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                (c, s)
            };
            // source: writer → a; destination: b → reader; observer's socket: o (always readable).
            let (mut writer, a) = std_pair();
            let (b, reader) = std_pair();
            let (mut poker, o) = std_pair();
            for s in [&writer, &a, &b, &reader] {
                crate::sys::socket::force_buffer_sizes(s, BIG).expect("SO_*BUFFORCE (needs root)");
            }
            poker.write_all(b"!").unwrap();
            writer.set_nonblocking(true).unwrap();
            // Byte i of the stream is (i % 65536) % 251, whatever each write took.
            let pattern: Vec<u8> = (0..131072u32).map(|i| (i % 65536 % 251) as u8).collect();
            let mut queued = 0usize;
            while queued < WANT {
                let at = queued % 65536;
                match writer.write(&pattern[at..at + (WANT - queued).min(65536)]) {
                    Ok(n) => queued += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("writer: {e}"),
                }
            }
            assert!(queued >= 4 << 20, "the source holds only {queued} bytes");
            writer.shutdown(std::net::Shutdown::Write).unwrap();
            let (a, b, o) = (
                TcpStream::from_std(a).unwrap(),
                TcpStream::from_std(b).unwrap(),
                TcpStream::from_std(o).unwrap(),
            );
            let (a_r, _a_w) = a.into_split();
            let (_b_r, b_w) = b.into_split();
            let (o_r, _o_w) = o.into_split();
            let pool = Rc::new(BufferPool::new(65536));
            let counter = Rc::new(ByteCounter::default());
            let done = Rc::new(Cell::new(false));
            let copy = {
                let (pool, counter, done) = (pool.clone(), counter.clone(), done.clone());
                monoio::spawn(async move {
                    let ended = Cell::new(true); // no FIN on the way: the close sends it
                    let r = one_way(
                        a_r,
                        b_w,
                        (Side::Downstream, Side::Upstream),
                        &pool,
                        &counter,
                        &ended,
                    )
                    .await;
                    done.set(true);
                    r.map(drop)
                })
            };
            let observer = {
                let (counter, done) = (counter.clone(), done.clone());
                monoio::spawn(async move {
                    let mut seen = vec![counter.get()];
                    while !done.get() {
                        give_way(&o_r).await.unwrap();
                        seen.push(counter.get());
                    }
                    seen
                })
            };
            copy.await.unwrap();
            let seen = observer.await;
            NO_SPLICE.with(|c| c.set(false));
            (queued, counter.get(), seen, reader)
        };
        let (queued, copied, seen, mut reader) = match driver {
            crate::core::Driver::Uring => {
                crate::runtime::uring::runtime(0, 256, crate::config::UringSetup::DEFAULT)
                    .unwrap()
                    .block_on(case)
            }
            crate::core::Driver::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap()
                .block_on(case),
        };
        assert_eq!(copied as usize, queued);
        let mut got = Vec::with_capacity(queued);
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), queued, "every byte arrives");
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &b)| b == ((i % 65536) % 251) as u8)
        );
        let gaps: Vec<u64> = seen.windows(2).map(|w| w[1] - w[0]).collect();
        let widest = gaps.iter().copied().max().unwrap_or(copied);
        assert!(
            widest <= (TURN + (1 << 20)) as u64 && widest < copied / 2,
            "{driver:?} splice={splice}: the copy moved {widest} of {copied} bytes without \
             letting the observer run ({} turns seen)",
            seen.len()
        );
    }

    #[test]
    fn a_busy_spliced_direction_gives_way_uring() {
        a_busy_direction_gives_way(crate::core::Driver::Uring, true);
    }

    #[test]
    fn a_busy_spliced_direction_gives_way_epoll() {
        a_busy_direction_gives_way(crate::core::Driver::Legacy, true);
    }

    #[test]
    fn a_busy_copied_direction_gives_way_uring() {
        a_busy_direction_gives_way(crate::core::Driver::Uring, false);
    }

    #[test]
    fn a_busy_copied_direction_gives_way_epoll() {
        a_busy_direction_gives_way(crate::core::Driver::Legacy, false);
    }
}
